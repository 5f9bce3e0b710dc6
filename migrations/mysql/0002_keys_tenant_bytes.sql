-- rowseal_keys.tenant compares bytes (utf8mb4_bin), so that tenant ACME
-- never finds tenant acme's keys under a case-insensitive collation.
-- Databases whose tables predate that change (made by rowseal's first
-- rowseal_keys, with the database's default collation) get it here; on a
-- table that has it already this changes nothing.
ALTER TABLE rowseal_keys
    MODIFY tenant VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '';
