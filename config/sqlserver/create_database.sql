-- Compose stack, step 1 of the SQL Server init: the `erp` database (idempotent).
-- Step 2 (simulator-setup) creates the tables; step 3 runs enable_cdc.sql in `erp`.
IF DB_ID(N'erp') IS NULL
    CREATE DATABASE erp;
GO
ALTER DATABASE erp SET ALLOW_SNAPSHOT_ISOLATION ON;
GO
