-- Enable change data capture for Tidemark on one SQL Server database.
-- Run as a member of sysadmin (sp_cdc_enable_db needs it) in the database to capture.
-- Replace `shop`, the tables and the `tidemark` login to suit; see config/sqlserver/README.md.
-- SQL Server Agent must be running: CDC's capture and cleanup jobs are Agent jobs.
-- Plain T-SQL without GO separators or IF blocks, so any client can run it as one batch
-- (and sqlglot can check it). Run it once: a second run fails on the existing role and
-- capture instances, which is harmless.

USE shop;

-- 1. CDC on the database: creates the `cdc` schema, the change tables' home and the
--    Agent capture and cleanup jobs.
EXEC sys.sp_cdc_enable_db;

-- 2. The gating role: members may read the change tables of the captured tables.
CREATE ROLE tidemark_cdc;

-- 3. CDC per table. The capture instance name carries a version (`_v1`) because a schema
--    change needs a second capture instance (`_v2`); see README.md.
EXEC sys.sp_cdc_enable_table
    @source_schema = N'dbo',
    @source_name = N'customers',
    @role_name = N'tidemark_cdc',
    @capture_instance = N'dbo_customers_v1',
    @supports_net_changes = 0;

EXEC sys.sp_cdc_enable_table
    @source_schema = N'dbo',
    @source_name = N'addresses',
    @role_name = N'tidemark_cdc',
    @capture_instance = N'dbo_addresses_v1',
    @supports_net_changes = 0;

-- 4. Debezium's login (created at server level beforehand): the snapshot reads the
--    tables, streaming reads the change tables through the cdc functions.
CREATE USER tidemark FOR LOGIN tidemark;
EXEC sp_addrolemember @rolename = N'tidemark_cdc', @membername = N'tidemark';
GRANT SELECT ON dbo.customers TO tidemark;
GRANT SELECT ON dbo.addresses TO tidemark;
GRANT SELECT ON SCHEMA::cdc TO tidemark;
GRANT VIEW DATABASE STATE TO tidemark;

-- 5. The capture job scans the log every 5 seconds by default (@pollinginterval, in
--    seconds). Lower means less latency and more CPU on the server; restart the job
--    (sys.sp_cdc_stop_job / sys.sp_cdc_start_job) for the change to apply.
EXEC sys.sp_cdc_change_job @job_type = N'capture', @pollinginterval = 5;

-- 6. Check: one row per captured table and capture instance.
EXEC sys.sp_cdc_help_change_data_capture;
