-- What applications last saw of each root key, per tenant ('' for global
-- keys): the last successful unwrap and the last error, in unix
-- milliseconds. Written by rowseal's key store at most once per key-cache
-- miss (errors at most every 10 s per process), read by `rowseal status --keys`.
-- Tenants compare bytes, as in rowseal_keys.
CREATE TABLE IF NOT EXISTS rowseal_key_health (
    tenant          VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    root_key_id     VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    last_ok_at      BIGINT,
    last_error_at   BIGINT,
    last_error_kind VARCHAR(32),
    last_error      VARCHAR(500),
    PRIMARY KEY (tenant, root_key_id)
);
