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
