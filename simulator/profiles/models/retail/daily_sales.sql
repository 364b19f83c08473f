-- Daily sales by store: per store and day, the sales, how many were paid or refunded, and
-- their totals. Refreshed incrementally: a batch recomputes only the (store, day) groups
-- whose sales it touched.
SELECT
    store_id,
    CAST(sold_at AS DATE) AS day,
    count(*) AS sales,
    count(*) FILTER (WHERE status = 'paid') AS paid_sales,
    count(*) FILTER (WHERE status = 'refunded') AS refunded_sales,
    sum(total) FILTER (WHERE status = 'paid') AS paid_total,
    sum(total) AS total
FROM live."retail.public.sales"
GROUP BY store_id, CAST(sold_at AS DATE)
