-- Every customer with their current billing and shipping address (the default one of each
-- type when there are several, else the lowest id). Refreshed by overwrite (it joins).
WITH ranked AS (
    SELECT
        *,
        row_number() OVER (PARTITION BY customer_id, address_type ORDER BY is_default DESC, id)
            AS pick
    FROM live."customers.public.addresses"
)
SELECT
    c.id AS customer_id,
    c.first_name,
    c.last_name,
    c.email,
    c.is_active,
    b.line1 AS billing_line1,
    b.city AS billing_city,
    b.postal_code AS billing_postal_code,
    b.country AS billing_country,
    s.line1 AS shipping_line1,
    s.city AS shipping_city,
    s.postal_code AS shipping_postal_code,
    s.country AS shipping_country
FROM live."customers.public.customers" AS c
LEFT JOIN ranked AS b ON b.customer_id = c.id AND b.address_type = 'billing' AND b.pick = 1
LEFT JOIN ranked AS s ON s.customer_id = c.id AND s.address_type = 'shipping' AND s.pick = 1
