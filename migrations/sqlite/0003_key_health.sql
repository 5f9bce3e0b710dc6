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
