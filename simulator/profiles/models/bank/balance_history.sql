-- Balance history per account per day, from the forensic layer: for every day on which an
-- account's row changed, the balance it closed the day with and how many versions it went
-- through. The balance holds until the account's next row; a deleted account's history ends
-- with its last version.
-- The day's last version is the one with the highest source position: versions of one
-- source transaction share their commit time.
-- Refreshed incrementally: a batch recomputes only the (account, day) groups it touched.
SELECT
    id AS account_id,
    CAST(_tm_valid_from AS DATE) AS day,
    arg_max(balance, _tm_position) AS closing_balance,
    arg_max(status, _tm_position) AS closing_status,
    count(*) AS versions,
    max(_tm_valid_from) AS last_change_at
FROM forensic."bank.public.accounts"
GROUP BY id, CAST(_tm_valid_from AS DATE)
