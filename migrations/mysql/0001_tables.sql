-- rowseal's own tables (MySQL, MariaDB). Idempotent; usable with sqlx::migrate!
-- (copy into your migrations folder) or through rowseal_sqlx::schema::install.

-- Wrapped tenant and index keys, per scope and version.
CREATE TABLE IF NOT EXISTS rowseal_keys (
    purpose     VARCHAR(16)  NOT NULL,               -- 'tenant' | 'index'
    scope_kind  VARCHAR(16)  NOT NULL,               -- 'tenant' | 'global'
    -- Byte comparison: under the default case-insensitive collation 'ACME'
    -- would find tenant 'acme''s keys.
    tenant      VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',  -- '' for global keys
    version     BIGINT       NOT NULL,
    wrapped     VARBINARY(4096),                         -- NULL once destroyed
    root_key_id TEXT,                                -- the root key that wraps it
    state       VARCHAR(16)  NOT NULL,               -- 'active' | 'pending' | 'retired' | 'destroyed'
    created_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
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
    updated_at         DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);

-- Checkpoints and heartbeats of the command-line tool's jobs.
CREATE TABLE IF NOT EXISTS rowseal_jobs (
    id           VARCHAR(64)  NOT NULL PRIMARY KEY,
    kind         VARCHAR(32)  NOT NULL,
    table_name   VARCHAR(255),
    params       TEXT         NOT NULL,
    state        VARCHAR(16)  NOT NULL,              -- 'running' | 'done' | 'failed' | 'cancelled'
    checkpoint   TEXT,
    worker       VARCHAR(255),
    rows_done    BIGINT       NOT NULL DEFAULT 0,
    heartbeat_at DATETIME(6),
    created_at   DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at   DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    INDEX rowseal_jobs_state (state, kind)
);

