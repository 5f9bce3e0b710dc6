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
