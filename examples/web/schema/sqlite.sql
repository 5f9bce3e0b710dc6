-- rowseal's own tables (SQLite). Idempotent; usable with sqlx::migrate!
-- (copy into your migrations folder) or through rowseal_sqlx::schema::install.

-- Wrapped tenant and index keys, per scope and version.
CREATE TABLE IF NOT EXISTS rowseal_keys (
    purpose     VARCHAR(16)  NOT NULL,               -- 'tenant' | 'index'
    scope_kind  VARCHAR(16)  NOT NULL,               -- 'tenant' | 'global'
    tenant      VARCHAR(255) NOT NULL DEFAULT '',    -- '' for global keys
    version     BIGINT       NOT NULL,
    wrapped     BLOB,                               -- NULL once destroyed
    root_key_id TEXT,                                -- the root key that wraps it
    state       VARCHAR(16)  NOT NULL,               -- 'active' | 'pending' | 'retired' | 'destroyed'
    created_at  DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (purpose, scope_kind, tenant, version)
);

-- What the command-line tool needs to know about each encrypted table.
CREATE TABLE IF NOT EXISTS rowseal_schema (
    table_name         VARCHAR(255) NOT NULL PRIMARY KEY,
    record_type        VARCHAR(255) NOT NULL,
    tenant_column      VARCHAR(255) NOT NULL,
    primary_key_column VARCHAR(255) NOT NULL,
    key_mode           VARCHAR(16)  NOT NULL,
    bind_primary_key   BOOLEAN      NOT NULL,
    definition         TEXT         NOT NULL,        -- JSON, see rowseal_sqlx::schema
    updated_at         DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- Checkpoints and heartbeats of the command-line tool's jobs.
CREATE TABLE IF NOT EXISTS rowseal_jobs (
    id           VARCHAR(64)  NOT NULL PRIMARY KEY,
    kind         VARCHAR(32)  NOT NULL,
    table_name   VARCHAR(255),
    params       TEXT         NOT NULL DEFAULT '{}',
    state        VARCHAR(16)  NOT NULL,              -- 'running' | 'done' | 'failed' | 'cancelled'
    checkpoint   TEXT,
    worker       VARCHAR(255),
    rows_done    BIGINT       NOT NULL DEFAULT 0,
    heartbeat_at DATETIME   ,
    created_at   DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at   DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS rowseal_jobs_state ON rowseal_jobs (state, kind);
-- What applications last saw of each root key, per tenant ('' for global
-- keys): the last successful unwrap and the last error, in unix
-- milliseconds. Written by rowseal's key store at most once per key-cache
-- miss (errors at most every 10 s per process), read by `rowseal status --keys`.
CREATE TABLE IF NOT EXISTS rowseal_key_health (
    tenant          TEXT NOT NULL,
    root_key_id     TEXT NOT NULL,
    last_ok_at      INTEGER,
    last_error_at   INTEGER,
    last_error_kind TEXT,
    last_error      TEXT,
    PRIMARY KEY (tenant, root_key_id)
);
-- The web example's own tables: patients and their medical records, as
-- rowseal's DDL for the models gives them (rowseal::schema::create_table_sql),
-- and the app's indexes for its lists. IF NOT EXISTS: a database the example
-- made at start-up before it had migrations is adopted. rowseal's own tables
-- are rowseal's migrations (rowseal::migrate), not the app's.
CREATE TABLE IF NOT EXISTS `patients` (
    `id` BLOB NOT NULL PRIMARY KEY,
    `tenant_id` BLOB NOT NULL,
    `created_at_ms` INTEGER NOT NULL,
    `name` BLOB NOT NULL,
    `email` BLOB NOT NULL,
    `ssn` BLOB,
    `birth_date` BLOB,
    `rowseal_header` BLOB NOT NULL,
    `rowseal_key_version` INTEGER NOT NULL,
    `email_idx` INTEGER,
    `email_idx_kv` INTEGER,
    `email_idx_alt` INTEGER,
    `email_idx_alt_kv` INTEGER,
    `ssn_idx` INTEGER,
    `ssn_idx_kv` INTEGER,
    `ssn_idx_alt` INTEGER,
    `ssn_idx_alt_kv` INTEGER
);
CREATE INDEX IF NOT EXISTS `patients_rowseal_kv` ON `patients` (`tenant_id`, `rowseal_key_version`);
CREATE UNIQUE INDEX IF NOT EXISTS `patients_email_idx` ON `patients` (`tenant_id`, `email_idx`);
CREATE UNIQUE INDEX IF NOT EXISTS `patients_email_idx_alt` ON `patients` (`tenant_id`, `email_idx_alt`);
CREATE INDEX IF NOT EXISTS `patients_ssn_idx` ON `patients` (`tenant_id`, `ssn_idx`);
CREATE INDEX IF NOT EXISTS `patients_ssn_idx_alt` ON `patients` (`tenant_id`, `ssn_idx_alt`);
CREATE TABLE IF NOT EXISTS `medical_records` (
    `id` BLOB NOT NULL PRIMARY KEY,
    `tenant_id` BLOB NOT NULL,
    `patient_id` BLOB NOT NULL,
    `created_at_ms` INTEGER NOT NULL,
    `note` BLOB NOT NULL,
    `diagnosis_code` BLOB,
    `rowseal_header` BLOB NOT NULL,
    `rowseal_key_version` INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS `medical_records_rowseal_kv` ON `medical_records` (`tenant_id`, `rowseal_key_version`);
CREATE INDEX IF NOT EXISTS patients_created ON patients (tenant_id, created_at_ms);
CREATE INDEX IF NOT EXISTS medical_records_patient ON medical_records (tenant_id, patient_id, created_at_ms);
CREATE INDEX IF NOT EXISTS medical_records_created ON medical_records (tenant_id, created_at_ms);
-- rowseal now makes each blind-index slot index partial: a slot holds values
-- only for its index-key versions (odd or even), so outside a rotation one of
-- the two is NULL on every row and need not be in an index at all. The same
-- statements as rowseal::schema::create_table_sql gives for the models.
-- In one transaction, as the migrator runs it.
DROP INDEX IF EXISTS `patients_email_idx`;
CREATE UNIQUE INDEX `patients_email_idx` ON `patients` (`tenant_id`, `email_idx`) WHERE `email_idx` IS NOT NULL;
DROP INDEX IF EXISTS `patients_email_idx_alt`;
CREATE UNIQUE INDEX `patients_email_idx_alt` ON `patients` (`tenant_id`, `email_idx_alt`) WHERE `email_idx_alt` IS NOT NULL;
DROP INDEX IF EXISTS `patients_ssn_idx`;
CREATE INDEX `patients_ssn_idx` ON `patients` (`tenant_id`, `ssn_idx`) WHERE `ssn_idx` IS NOT NULL;
DROP INDEX IF EXISTS `patients_ssn_idx_alt`;
CREATE INDEX `patients_ssn_idx_alt` ON `patients` (`tenant_id`, `ssn_idx_alt`) WHERE `ssn_idx_alt` IS NOT NULL;
