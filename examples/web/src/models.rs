//! The encrypted models, and the JSON the API takes and gives.
//!
//! The models do not derive `Debug` on purpose: a `{:?}` in a log line would
//! print a patient's name and SSN. The JSON views are built only for the
//! response to the patient's own tenant.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rowseal::Encrypted;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

/// A patient. `name`, `email`, `ssn` and `birth_date` are encrypted (each its
/// own column holding an envelope); `email` and `ssn` also have blind
/// indexes, so that the API can look patients up by them. Every ciphertext is
/// bound to the tenant and the row's id.
///
/// `#[derive(Encrypted)]` also generates [`PatientSealed`], the row as
/// stored, which the list and join queries read with `sqlx::query_as!`
/// (see [`crate::queries`]) and `Encryptor::open_all` opens.
#[derive(Encrypted)]
#[rowseal(
    table = "patients",
    record_type = "patient",
    tenant = tenant_id,
    primary_key = id,
    bind_primary_key
)]
pub struct Patient {
    /// Chosen by the application (UUID v4), so that it can be bound into the
    /// ciphertexts before the row exists.
    pub id: Uuid,
    /// The tenant (a clinic), a UUID. Its canonical id, what every read
    /// names and what is bound into the ciphertexts, is `to_string()` (the
    /// lowercase hyphenated form). An identifier, never a name: it is part
    /// of the KMS encryption context, which KMS logs in clear.
    pub tenant_id: Uuid,
    /// When the patient was registered (unix milliseconds, UTC), set by the
    /// application; `GET /patients` lists a clinic's patients in this order.
    pub created_at_ms: i64,
    /// Full name.
    #[rowseal(encrypt)]
    pub name: String,
    /// E-mail address: unique per tenant after trimming and lower-casing.
    /// 64 bits, because a truncated unique index rejects two different
    /// values that share an index value (docs/blind-indexes.md).
    #[rowseal(
        encrypt,
        blind_index(name = "email_idx", bits = 64, normalize = "trim,lowercase", unique)
    )]
    pub email: String,
    /// Social security number, looked up by its digits only (`123-45-6789`
    /// and `123456789` are the same). 16 bits: each lookup value matches
    /// about one index value in 65,536, and false positives are removed
    /// after decryption.
    #[rowseal(
        encrypt,
        blind_index(name = "ssn_idx", bits = 16, normalize = "digits")
    )]
    pub ssn: Option<String>,
    /// Date of birth.
    #[rowseal(encrypt)]
    pub birth_date: Option<NaiveDate>,
}

/// A medical record of a patient. The note and the diagnosis code are
/// encrypted; the patient id and the time are plain columns (the API lists a
/// patient's records by them, and joins records with their patients on the
/// patient id). Its sealed row type is [`MedicalRecordSealed`].
#[derive(Encrypted)]
#[rowseal(
    table = "medical_records",
    record_type = "medical_record",
    tenant = tenant_id,
    primary_key = id,
    bind_primary_key
)]
pub struct MedicalRecord {
    /// Chosen by the application (UUID v4).
    pub id: Uuid,
    /// The tenant.
    pub tenant_id: Uuid,
    /// The patient (same tenant).
    pub patient_id: Uuid,
    /// When the record was written (unix milliseconds, UTC).
    pub created_at_ms: i64,
    /// Free text.
    #[rowseal(encrypt)]
    pub note: String,
    /// An ICD-10 code, for example.
    #[rowseal(encrypt)]
    pub diagnosis_code: Option<String>,
}

/// The body of `POST /patients` and `PUT /patients/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientInput {
    /// Full name, 1 to 200 characters.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Social security number (`123-45-6789` or `123456789`).
    #[serde(default)]
    pub ssn: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub birth_date: Option<String>,
}

/// What the API says about a patient.
#[derive(Serialize)]
pub struct PatientView {
    /// The id.
    pub id: Uuid,
    /// When the patient was registered: RFC 3339, UTC.
    pub created_at: String,
    /// Full name.
    pub name: String,
    /// E-mail address, as entered.
    pub email: String,
    /// Social security number, as entered.
    pub ssn: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: Option<String>,
}

/// The body of `POST /patients/search`: exactly one of the two.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchInput {
    /// Find by e-mail (case and surrounding spaces do not matter).
    #[serde(default)]
    pub email: Option<String>,
    /// Find by SSN (only the digits matter).
    #[serde(default)]
    pub ssn: Option<String>,
}

/// The body of `POST /patients/{id}/records`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordInput {
    /// Free text, 1 to 10,000 characters.
    pub note: String,
    /// A diagnosis code, up to 16 letters, digits and dots.
    #[serde(default)]
    pub diagnosis_code: Option<String>,
}

/// What the API says about a medical record.
#[derive(Serialize)]
pub struct RecordView {
    /// The id.
    pub id: Uuid,
    /// The patient.
    pub patient_id: Uuid,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Free text.
    pub note: String,
    /// The diagnosis code.
    pub diagnosis_code: Option<String>,
}

/// What `GET /records` says about each record: the record and its patient's
/// name, both decrypted from one row of a join.
#[derive(Serialize)]
pub struct RecordWithPatientView {
    /// The record.
    #[serde(flatten)]
    pub record: RecordView,
    /// The patient's full name.
    pub patient_name: String,
}

impl Patient {
    /// A patient of `tenant`, registered at `created_at_ms`, from validated
    /// input.
    pub fn from_input(
        id: Uuid,
        tenant: Uuid,
        created_at_ms: i64,
        input: PatientInput,
    ) -> Result<Patient, ApiError> {
        Ok(Patient {
            id,
            tenant_id: tenant,
            created_at_ms,
            name: checked_name(&input.name)?,
            email: checked_email(&input.email)?,
            ssn: input.ssn.as_deref().map(checked_ssn).transpose()?,
            birth_date: input
                .birth_date
                .as_deref()
                .map(parse_birth_date)
                .transpose()?,
        })
    }

    /// The JSON view.
    pub fn view(&self) -> PatientView {
        PatientView {
            id: self.id,
            created_at: rfc3339(self.created_at_ms),
            name: self.name.clone(),
            email: self.email.clone(),
            ssn: self.ssn.clone(),
            birth_date: self.birth_date.map(|d| d.format("%Y-%m-%d").to_string()),
        }
    }
}

fn checked_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::BadRequest("name: 1 to 200 characters expected"));
    }
    Ok(name.to_owned())
}

fn checked_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim();
    if !valid_email(email) {
        return Err(ApiError::BadRequest("email: an e-mail address expected"));
    }
    Ok(email.to_owned())
}

fn checked_ssn(ssn: &str) -> Result<String, ApiError> {
    if !valid_ssn(ssn) {
        return Err(ApiError::BadRequest(
            "ssn: 9 digits expected (123-45-6789 or 123456789)",
        ));
    }
    Ok(ssn.trim().to_owned())
}

/// The body of `PATCH /patients/{id}`: the fields to change, each as in
/// [`PatientInput`]; `null` clears `ssn` or `birth_date`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientPatch {
    /// A new full name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new e-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// A new SSN, or `null` to clear it.
    #[serde(default, deserialize_with = "present")]
    pub ssn: Option<Option<String>>,
    /// A new birth date, or `null` to clear it.
    #[serde(default, deserialize_with = "present")]
    pub birth_date: Option<Option<String>>,
}

/// A field given (`Some`, its value possibly `null`) or left out (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl PatientPatch {
    /// The row to give `Encryptor::update_fields` (only the changed
    /// fields' values count; the others are placeholders it never writes)
    /// and the names of the changed fields. 400 if nothing changes or a
    /// value is invalid.
    pub fn into_update(
        self,
        id: Uuid,
        tenant: Uuid,
    ) -> Result<(Patient, Vec<&'static str>), ApiError> {
        let mut fields = Vec::new();
        let mut row = Patient {
            id,
            tenant_id: tenant,
            created_at_ms: 0,
            name: String::new(),
            email: String::new(),
            ssn: None,
            birth_date: None,
        };
        if let Some(name) = self.name {
            row.name = checked_name(&name)?;
            fields.push("name");
        }
        if let Some(email) = self.email {
            row.email = checked_email(&email)?;
            fields.push("email");
        }
        if let Some(ssn) = self.ssn {
            row.ssn = ssn.as_deref().map(checked_ssn).transpose()?;
            fields.push("ssn");
        }
        if let Some(date) = self.birth_date {
            row.birth_date = date.as_deref().map(parse_birth_date).transpose()?;
            fields.push("birth_date");
        }
        if fields.is_empty() {
            return Err(ApiError::BadRequest(
                "body: at least one of \"name\", \"email\", \"ssn\", \"birth_date\" expected",
            ));
        }
        Ok((row, fields))
    }
}

impl MedicalRecord {
    /// A record of `patient_id` from validated input.
    pub fn from_input(
        id: Uuid,
        tenant: Uuid,
        patient_id: Uuid,
        now: DateTime<Utc>,
        input: RecordInput,
    ) -> Result<MedicalRecord, ApiError> {
        let n = input.note.chars().count();
        if input.note.trim().is_empty() || n > 10_000 {
            return Err(ApiError::BadRequest(
                "note: 1 to 10,000 characters expected",
            ));
        }
        if let Some(code) = &input.diagnosis_code {
            if code.is_empty()
                || code.len() > 16
                || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
            {
                return Err(ApiError::BadRequest(
                    "diagnosis_code: up to 16 letters, digits and dots expected",
                ));
            }
        }
        Ok(MedicalRecord {
            id,
            tenant_id: tenant,
            patient_id,
            created_at_ms: now.timestamp_millis(),
            note: input.note,
            diagnosis_code: input.diagnosis_code,
        })
    }

    /// The JSON view.
    pub fn view(&self) -> RecordView {
        RecordView {
            id: self.id,
            patient_id: self.patient_id,
            created_at: rfc3339(self.created_at_ms),
            note: self.note.clone(),
            diagnosis_code: self.diagnosis_code.clone(),
        }
    }
}

/// Unix milliseconds as RFC 3339 (UTC, milliseconds).
fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A deliberately simple check: something@something.something, no spaces,
/// at most 254 characters.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.contains(char::is_whitespace)
        && !domain.contains('@')
}

/// Nine digits, optionally grouped with dashes or spaces.
pub fn valid_ssn(ssn: &str) -> bool {
    let ssn = ssn.trim();
    ssn.len() <= 20
        && ssn
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == ' ')
        && ssn.chars().filter(char::is_ascii_digit).count() == 9
}

fn parse_birth_date(s: &str) -> Result<NaiveDate, ApiError> {
    let date = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| ApiError::BadRequest("birth_date: YYYY-MM-DD expected"))?;
    let today = Utc::now().date_naive();
    if date > today || date.year_ce().1 < 1850 {
        return Err(ApiError::BadRequest(
            "birth_date: a date between 1850 and today expected",
        ));
    }
    Ok(date)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn input_checks() {
        assert!(valid_email("ada@example.com"));
        assert!(!valid_email("ada"));
        assert!(!valid_email("ada@example"));
        assert!(!valid_email("a da@example.com"));
        assert!(valid_ssn("123-45-6789"));
        assert!(valid_ssn("123456789"));
        assert!(!valid_ssn("12345678"));
        assert!(!valid_ssn("123-45-678x"));
        assert!(parse_birth_date("1815-12-10").is_err());
        assert!(parse_birth_date("1990-02-30").is_err());
        assert_eq!(
            parse_birth_date("1990-02-28").unwrap(),
            NaiveDate::from_ymd_opt(1990, 2, 28).unwrap()
        );
    }
}
