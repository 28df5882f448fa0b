-- Same as PostgreSQL's 0010: the rollups' secondary indexes cost more on every upsert than they
-- saved on reads (the primary key, starting with bucket and time, serves the usage API's range
-- scans). SQLite has no fillfactor.
DROP INDEX usage_rollups_org;
DROP INDEX usage_rollups_user;
DROP INDEX usage_rollups_team;
