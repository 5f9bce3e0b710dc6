-- rowseal's own tables (PostgreSQL). Idempotent; usable with sqlx::migrate!
-- (copy into your migrations folder) or through rowseal_sqlx::schema::install.

-- Wrapped tenant and index keys, per scope and version.
CREATE TABLE IF NOT EXISTS rowseal_keys (
    purpose     VARCHAR(16)  NOT NULL,               -- 'tenant' | 'index'
    scope_kind  VARCHAR(16)  NOT NULL,               -- 'tenant' | 'global'
    tenant      VARCHAR(255) NOT NULL DEFAULT '',    -- '' for global keys
    version     BIGINT       NOT NULL,
    wrapped     BYTEA,                               -- NULL once destroyed
    root_key_id TEXT,                                -- the root key that wraps it
    state       VARCHAR(16)  NOT NULL,               -- 'active' | 'pending' | 'retired' | 'destroyed'
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT CURRENT_TIMESTAMP,
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
    updated_at         TIMESTAMPTZ  NOT NULL DEFAULT CURRENT_TIMESTAMP
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
    heartbeat_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ  NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at   TIMESTAMPTZ  NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS rowseal_jobs_state ON rowseal_jobs (state, kind);
-- What applications last saw of each root key, per tenant ('' for global
-- keys): the last successful unwrap and the last error, in unix
-- milliseconds. Written by rowseal's key store at most once per key-cache
-- miss (errors at most every 10 s per process), read by `rowseal status --keys`.
CREATE TABLE IF NOT EXISTS rowseal_key_health (
    tenant          VARCHAR(255) NOT NULL,
    root_key_id     VARCHAR(512) NOT NULL,
    last_ok_at      BIGINT,
    last_error_at   BIGINT,
    last_error_kind VARCHAR(32),
    last_error      VARCHAR(500),
    PRIMARY KEY (tenant, root_key_id)
);
-- The web example's own tables: patients and their medical records, as
-- rowseal's DDL for the models gives them (rowseal::schema::create_table_sql),
-- and the app's indexes for its lists. IF NOT EXISTS: a database the example
-- made at start-up before it had migrations is adopted. rowseal's own tables
-- are rowseal's migrations (rowseal::migrate), not the app's.
CREATE TABLE IF NOT EXISTS "patients" (
    "id" UUID NOT NULL PRIMARY KEY,
    "tenant_id" UUID NOT NULL,
    "created_at_ms" BIGINT NOT NULL,
    "name" BYTEA NOT NULL,
    "email" BYTEA NOT NULL,
    "ssn" BYTEA,
    "birth_date" BYTEA,
    "rowseal_header" BYTEA NOT NULL,
    "rowseal_key_version" BIGINT NOT NULL,
    "email_idx" BIGINT,
    "email_idx_kv" BIGINT,
    "email_idx_alt" BIGINT,
    "email_idx_alt_kv" BIGINT,
    "ssn_idx" BIGINT,
    "ssn_idx_kv" BIGINT,
    "ssn_idx_alt" BIGINT,
    "ssn_idx_alt_kv" BIGINT
);
CREATE INDEX IF NOT EXISTS "patients_rowseal_kv" ON "patients" ("tenant_id", "rowseal_key_version");
CREATE UNIQUE INDEX IF NOT EXISTS "patients_email_idx" ON "patients" ("tenant_id", "email_idx");
CREATE UNIQUE INDEX IF NOT EXISTS "patients_email_idx_alt" ON "patients" ("tenant_id", "email_idx_alt");
CREATE INDEX IF NOT EXISTS "patients_ssn_idx" ON "patients" ("tenant_id", "ssn_idx");
CREATE INDEX IF NOT EXISTS "patients_ssn_idx_alt" ON "patients" ("tenant_id", "ssn_idx_alt");
CREATE TABLE IF NOT EXISTS "medical_records" (
    "id" UUID NOT NULL PRIMARY KEY,
    "tenant_id" UUID NOT NULL,
    "patient_id" UUID NOT NULL,
    "created_at_ms" BIGINT NOT NULL,
    "note" BYTEA NOT NULL,
    "diagnosis_code" BYTEA,
    "rowseal_header" BYTEA NOT NULL,
    "rowseal_key_version" BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS "medical_records_rowseal_kv" ON "medical_records" ("tenant_id", "rowseal_key_version");
CREATE INDEX IF NOT EXISTS patients_created ON patients (tenant_id, created_at_ms);
CREATE INDEX IF NOT EXISTS medical_records_patient ON medical_records (tenant_id, patient_id, created_at_ms);
CREATE INDEX IF NOT EXISTS medical_records_created ON medical_records (tenant_id, created_at_ms);
-- rowseal now makes each blind-index slot index partial: a slot holds values
-- only for its index-key versions (odd or even), so outside a rotation one of
-- the two is NULL on every row and need not be in an index at all. The same
-- statements as rowseal::schema::create_table_sql gives for the models.
-- In one transaction, as the migrator runs it; on a large live table, swap
-- each index with CREATE INDEX CONCURRENTLY instead (docs/blind-indexes.md).
DROP INDEX IF EXISTS "patients_email_idx";
CREATE UNIQUE INDEX "patients_email_idx" ON "patients" ("tenant_id", "email_idx") WHERE "email_idx" IS NOT NULL;
DROP INDEX IF EXISTS "patients_email_idx_alt";
CREATE UNIQUE INDEX "patients_email_idx_alt" ON "patients" ("tenant_id", "email_idx_alt") WHERE "email_idx_alt" IS NOT NULL;
DROP INDEX IF EXISTS "patients_ssn_idx";
CREATE INDEX "patients_ssn_idx" ON "patients" ("tenant_id", "ssn_idx") WHERE "ssn_idx" IS NOT NULL;
DROP INDEX IF EXISTS "patients_ssn_idx_alt";
CREATE INDEX "patients_ssn_idx_alt" ON "patients" ("tenant_id", "ssn_idx_alt") WHERE "ssn_idx_alt" IS NOT NULL;
