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
