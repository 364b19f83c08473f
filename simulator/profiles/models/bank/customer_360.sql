-- Customer 360: one row per customer with their segment, credit score, accounts (how many,
-- which types, balance per type and in total), transactions of the last 30 days (count and
-- amount), the last transaction's time and the customer's home address.
-- Refreshed by overwrite: it joins several tables and depends on the clock (30 days).
-- Tables are named in full ("bank.public.x"): a lake with another source's `customers`
-- table does not make the model ambiguous.
WITH accounts AS (
    SELECT
        customer_id,
        count(*) AS accounts,
        string_agg(DISTINCT account_type, ',' ORDER BY account_type) AS account_types,
        sum(balance) FILTER (WHERE account_type = 'checking') AS checking_balance,
        sum(balance) FILTER (WHERE account_type = 'savings') AS savings_balance,
        sum(balance) FILTER (WHERE account_type = 'credit') AS credit_balance,
        sum(balance) FILTER (WHERE account_type = 'loan') AS loan_balance,
        sum(balance) AS total_balance
    FROM live."bank.public.accounts"
    GROUP BY customer_id
),
activity AS (
    SELECT
        a.customer_id,
        count(*) FILTER (WHERE t.booked_at >= now() - INTERVAL 30 DAY) AS transactions_30d,
        sum(t.amount) FILTER (WHERE t.booked_at >= now() - INTERVAL 30 DAY) AS amount_30d,
        max(t.booked_at) AS last_transaction_at
    FROM live."bank.public.transactions" AS t
    JOIN live."bank.public.accounts" AS a ON a.id = t.account_id
    GROUP BY a.customer_id
),
home AS (
    SELECT customer_id, line1, line2, city, postal_code, country
    FROM (
        SELECT
            *,
            row_number() OVER (
                PARTITION BY customer_id ORDER BY is_default DESC, address_type, id
            ) AS pick
        FROM live."bank.public.addresses"
    ) AS ranked
    WHERE pick = 1
)
SELECT
    c.id AS customer_id,
    c.first_name,
    c.last_name,
    c.email,
    c.segment,
    c.credit_score,
    coalesce(a.accounts, 0) AS accounts,
    a.account_types,
    a.checking_balance,
    a.savings_balance,
    a.credit_balance,
    a.loan_balance,
    coalesce(a.total_balance, 0) AS total_balance,
    coalesce(t.transactions_30d, 0) AS transactions_30d,
    coalesce(t.amount_30d, 0) AS amount_30d,
    t.last_transaction_at,
    h.line1 AS address_line1,
    h.line2 AS address_line2,
    h.city AS address_city,
    h.postal_code AS address_postal_code,
    h.country AS address_country
FROM live."bank.public.customers" AS c
LEFT JOIN accounts AS a ON a.customer_id = c.id
LEFT JOIN activity AS t ON t.customer_id = c.id
LEFT JOIN home AS h ON h.customer_id = c.id
