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
