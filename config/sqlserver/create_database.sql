-- Compose stack, step 1 of the SQL Server init: the `shop` database (idempotent).
-- Step 2 (simulator-setup) creates the tables; step 3 runs enable_cdc.sql (which says
-- `USE shop`). The source is called `erp` in the pipeline, so topics are erp.shop.dbo.<table>
-- and lake tables erp.dbo.<table>.
IF DB_ID(N'shop') IS NULL
    CREATE DATABASE shop;
GO
ALTER DATABASE shop SET ALLOW_SNAPSHOT_ISOLATION ON;
GO
