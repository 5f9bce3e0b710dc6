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
