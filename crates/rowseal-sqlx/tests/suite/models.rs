//! Models shared by the per-database suites.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use rowseal_sqlx::Encrypted;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "patients",
    record_type = "patient",
    tenant = tenant_id,
    primary_key = id,
    key_mode = "derived",
    bind_primary_key
)]
pub struct Patient {
    pub id: Uuid,
    pub tenant_id: String,
    #[rowseal(encrypt)]
    pub name: String,
    #[rowseal(encrypt, column = "dob")]
    pub birth_date: Option<NaiveDate>,
    pub visits: i64,
    #[rowseal(encrypt)]
    pub notes: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub street: String,
    pub zip: u32,
    pub tags: Vec<String>,
}

/// Every supported encrypted type, and a set of plain ones.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "everything", record_type = "everything", tenant = tenant, primary_key = id)]
pub struct Everything {
    pub id: i64,
    pub tenant: String,
    #[rowseal(encrypt)]
    pub s: String,
    #[rowseal(encrypt)]
    pub bytes: Vec<u8>,
    #[rowseal(encrypt)]
    pub flag: bool,
    #[rowseal(encrypt)]
    pub e_i8: i8,
    #[rowseal(encrypt)]
    pub e_i16: i16,
    #[rowseal(encrypt)]
    pub e_i32: i32,
    #[rowseal(encrypt)]
    pub e_i64: i64,
    #[rowseal(encrypt)]
    pub e_i128: i128,
    #[rowseal(encrypt)]
    pub e_u8: u8,
    #[rowseal(encrypt)]
    pub e_u16: u16,
    #[rowseal(encrypt)]
    pub e_u32: u32,
    #[rowseal(encrypt)]
    pub e_u64: u64,
    #[rowseal(encrypt)]
    pub e_u128: u128,
    #[rowseal(encrypt)]
    pub e_f32: f32,
    #[rowseal(encrypt)]
    pub e_f64: f64,
    #[rowseal(encrypt)]
    pub e_uuid: Uuid,
    #[rowseal(encrypt)]
    pub c_date: NaiveDate,
    #[rowseal(encrypt)]
    pub c_time: NaiveTime,
    #[rowseal(encrypt)]
    pub c_datetime: NaiveDateTime,
    #[rowseal(encrypt)]
    pub c_utc: DateTime<Utc>,
    #[rowseal(encrypt)]
    pub t_date: time::Date,
    #[rowseal(encrypt)]
    pub t_time: time::Time,
    #[rowseal(encrypt)]
    pub t_datetime: time::PrimitiveDateTime,
    #[rowseal(encrypt)]
    pub t_offset: time::OffsetDateTime,
    #[rowseal(encrypt)]
    pub j_value: serde_json::Value,
    #[rowseal(encrypt, json)]
    pub j_address: Address,
    #[rowseal(encrypt, json)]
    pub j_opt_address: Option<Address>,
    #[rowseal(encrypt)]
    pub o_s: Option<String>,
    #[rowseal(encrypt)]
    pub o_bytes: Option<Vec<u8>>,
    #[rowseal(encrypt)]
    pub o_i64: Option<i64>,
    #[rowseal(encrypt)]
    pub o_f64: Option<f64>,
    #[rowseal(encrypt)]
    pub o_uuid: Option<Uuid>,
    #[rowseal(encrypt)]
    pub o_utc: Option<DateTime<Utc>>,
    #[rowseal(encrypt)]
    pub o_t_offset: Option<time::OffsetDateTime>,
    #[rowseal(encrypt)]
    pub o_json: Option<serde_json::Value>,
    // plain columns
    pub p_bool: bool,
    pub p_i16: i16,
    pub p_i32: i32,
    pub p_f64: f64,
    pub p_text: Option<String>,
    pub p_bytes: Vec<u8>,
    pub p_uuid: Option<Uuid>,
    pub p_date: NaiveDate,
    pub p_ts: DateTime<Utc>,
    pub p_tdate: Option<time::Date>,
}

fn utc(s: i64, micros: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(s, micros * 1000).unwrap()
}

impl Everything {
    /// Every field set, with unicode and extreme values.
    pub fn full(id: i64, tenant: &str) -> Self {
        let tdate = time::Date::from_calendar_date(1969, time::Month::July, 20).unwrap();
        let ttime = time::Time::from_hms_nano(20, 17, 40, 123_456_789).unwrap();
        Everything {
            id,
            tenant: tenant.into(),
            s: "Zoë 🦀 — ünïcödé ✓ 漢字".into(),
            bytes: (0..=255).collect(),
            flag: true,
            e_i8: i8::MIN,
            e_i16: -12345,
            e_i32: i32::MAX,
            e_i64: i64::MIN,
            e_i128: i128::MAX,
            e_u8: u8::MAX,
            e_u16: 65535,
            e_u32: 4_000_000_000,
            e_u64: u64::MAX,
            e_u128: u128::MAX - 7,
            e_f32: -1.25,
            e_f64: std::f64::consts::PI,
            e_uuid: Uuid::new_v4(),
            c_date: NaiveDate::from_ymd_opt(1815, 12, 10).unwrap(),
            c_time: NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999).unwrap(),
            c_datetime: NaiveDate::from_ymd_opt(2038, 1, 19)
                .unwrap()
                .and_hms_nano_opt(3, 14, 8, 1)
                .unwrap(),
            c_utc: DateTime::from_timestamp(-1_000_000_000, 7).unwrap(),
            t_date: tdate,
            t_time: ttime,
            t_datetime: time::PrimitiveDateTime::new(tdate, ttime),
            t_offset: time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789)
                .unwrap()
                .to_offset(time::UtcOffset::from_hms(5, 30, 0).unwrap()),
            j_value: serde_json::json!({"a": [1, 2.5, null, "ß"], "b": {"c": true}}),
            j_address: Address {
                street: "1 Rue de l'Église".into(),
                zip: 75001,
                tags: vec!["home".into(), "".into()],
            },
            j_opt_address: Some(Address {
                street: String::new(),
                zip: 0,
                tags: vec![],
            }),
            o_s: Some(String::new()),
            o_bytes: Some(Vec::new()),
            o_i64: Some(0),
            o_f64: Some(f64::NEG_INFINITY),
            o_uuid: Some(Uuid::nil()),
            o_utc: Some(utc(0, 0)),
            o_t_offset: Some(time::OffsetDateTime::UNIX_EPOCH),
            o_json: Some(serde_json::Value::Null),
            p_bool: true,
            p_i16: -7,
            p_i32: 123_456,
            p_f64: 2.5,
            p_text: Some("plain ✓".into()),
            p_bytes: vec![1, 2, 3],
            p_uuid: Some(Uuid::new_v4()),
            p_date: NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
            p_ts: utc(1_700_000_000, 123_456),
            p_tdate: Some(tdate),
        }
    }

    /// Every optional field NULL, every string empty.
    pub fn minimal(id: i64, tenant: &str) -> Self {
        let mut e = Self::full(id, tenant);
        e.s = String::new();
        e.bytes = Vec::new();
        e.flag = false;
        e.j_opt_address = None;
        e.o_s = None;
        e.o_bytes = None;
        e.o_i64 = None;
        e.o_f64 = None;
        e.o_uuid = None;
        e.o_utc = None;
        e.o_t_offset = None;
        e.o_json = None;
        e.p_text = None;
        e.p_uuid = None;
        e.p_tdate = None;
        e.p_bytes = Vec::new();
        e
    }
}

impl Patient {
    pub fn new(tenant: &str, name: &str) -> Self {
        Patient {
            id: Uuid::new_v4(),
            tenant_id: tenant.into(),
            name: name.into(),
            birth_date: NaiveDate::from_ymd_opt(1990, 5, 17),
            visits: 3,
            notes: Some(format!("notes of {name}")),
        }
    }
}

/// One KMS data key per row (here from the local provider).
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "audited", record_type = "audited", tenant = org, primary_key = key, key_mode = "kms", bind_primary_key)]
pub struct Audited {
    pub key: String,
    pub org: String,
    #[rowseal(encrypt)]
    pub secret: String,
    #[rowseal(encrypt)]
    pub amount: Option<i64>,
}

/// A custom normalization step: drops a `+tag` from the user part of an
/// address.
pub fn strip_plus(s: &str) -> String {
    match s.split_once('+') {
        Some((user, rest)) => match rest.split_once('@') {
            Some((_, domain)) => format!("{user}@{domain}"),
            None => s.to_owned(),
        },
        None => s.to_owned(),
    }
}

/// Blind indexes of every kind.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "users",
    tenant = tenant_id,
    primary_key = id,
    compound_index(name = "name_city_idx", fields(last_name, city), bits = 32, normalize = "trim,lowercase"),
    compound_index(name = "ssn_city_idx", fields(ssn = "digits", city), normalize = "trim,lowercase"),
    record_type = "user",
)]
pub struct User {
    pub id: i64,
    pub tenant_id: String,
    #[rowseal(
        encrypt,
        blind_index(name = "email_idx", bits = 32, normalize = "trim,lowercase", unique),
        blind_index(
            name = "login_idx",
            column = "login_bidx",
            bits = 64,
            normalize = "trim,lowercase",
            scope = "global"
        )
    )]
    pub email: String,
    /// Three bits: eight index values, so most lookups meet collisions.
    #[rowseal(encrypt, blind_index(name = "ssn_idx", bits = 3, normalize = "digits"))]
    pub ssn: Option<String>,
    #[rowseal(encrypt)]
    pub last_name: String,
    #[rowseal(encrypt)]
    pub city: String,
    /// Stored as bytes (more than 64 bits), with a custom step.
    #[rowseal(encrypt, blind_index(name = "alias_idx", bits = 128, normalize = "trim,lowercase", normalize_with = super::models::strip_plus))]
    pub alias: Option<String>,
}

impl User {
    pub fn new(id: i64, tenant: &str, email: &str) -> Self {
        User {
            id,
            tenant_id: tenant.into(),
            email: email.into(),
            ssn: Some(format!("{:03}-{:02}-{:04}", id % 1000, id % 100, id)),
            last_name: format!("Name{id}"),
            city: "London".into(),
            alias: None,
        }
    }
}

/// A model before a rename: its struct, table and one column are renamed
/// below ([`Renamed`]); its record type and logical names stay.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "rn_before", record_type = "contact", tenant = tenant_id, primary_key = id)]
pub struct BeforeRename {
    pub id: i64,
    pub tenant_id: String,
    #[rowseal(
        encrypt,
        blind_index(name = "phone_idx", bits = 32, normalize = "digits")
    )]
    pub phone: String,
    #[rowseal(encrypt)]
    pub note: Option<String>,
}

/// [`BeforeRename`] after `ALTER TABLE rn_before RENAME TO rn_after` and
/// `RENAME COLUMN phone TO phone_enc`, with the Rust field renamed too: the
/// attributes name the new physical names and keep the logical one.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "rn_after", record_type = "contact", tenant = tenant_id, primary_key = id)]
pub struct Renamed {
    pub id: i64,
    pub tenant_id: String,
    #[rowseal(
        encrypt,
        name = "phone",
        column = "phone_enc",
        blind_index(
            name = "phone_idx",
            column = "phone_idx",
            bits = 32,
            normalize = "digits"
        )
    )]
    pub telephone: String,
    #[rowseal(encrypt)]
    pub note: Option<String>,
}

/// Three encrypted text fields: the row shape the stored-size figures of
/// docs/format.md are measured on.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "triples", record_type = "triple", tenant = tenant_id, primary_key = id)]
pub struct Triple {
    pub id: i64,
    pub tenant_id: String,
    #[rowseal(encrypt)]
    pub a: String,
    #[rowseal(encrypt)]
    pub b: String,
    #[rowseal(encrypt)]
    pub c: String,
}

/// Visits of a patient (joined with `patients`); its `name` column has the
/// same name as a column of `patients`.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "visits", record_type = "visit", tenant = tenant_id, primary_key = id)]
pub struct Visit {
    pub id: i64,
    pub tenant_id: String,
    pub patient_id: Uuid,
    #[rowseal(encrypt)]
    pub reason: String,
    #[rowseal(encrypt)]
    pub name: String,
}

/// A model whose tenant is a UUID column, with a tenant-scoped blind index.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "uuid_tenants", record_type = "uuid_tenant", tenant = org, primary_key = id, bind_primary_key)]
pub struct UuidTenant {
    pub id: i64,
    pub org: Uuid,
    #[rowseal(
        encrypt,
        blind_index(name = "ut_email_idx", bits = 32, normalize = "trim,lowercase")
    )]
    pub email: String,
    #[rowseal(encrypt)]
    pub secret: String,
}

impl UuidTenant {
    pub fn new(id: i64, org: Uuid, email: &str) -> Self {
        UuidTenant {
            id,
            org,
            email: email.into(),
            secret: format!("secret of {id}"),
        }
    }
}

/// An application's tenant type: a newtype over an integer column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrgId(pub i64);

impl rowseal_sqlx::PlainField for OrgId {
    const SQL_TYPE: rowseal_sqlx::SqlType = rowseal_sqlx::SqlType::I64;
    fn to_value(&self) -> rowseal_sqlx::Value {
        rowseal_sqlx::PlainField::to_value(&self.0)
    }
    fn from_value(v: rowseal_sqlx::Value) -> Option<Self> {
        <i64 as rowseal_sqlx::PlainField>::from_value(v).map(OrgId)
    }
}

impl rowseal_sqlx::TenantField for OrgId {
    fn tenant_id(&self) -> std::borrow::Cow<'_, str> {
        rowseal_sqlx::TenantField::tenant_id(&self.0)
    }
}

/// A model whose tenant is an integer newtype.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "org_notes", record_type = "org_note", tenant = org, primary_key = id)]
pub struct OrgNote {
    pub id: i64,
    pub org: OrgId,
    #[rowseal(encrypt)]
    pub body: String,
}

/// Members of teams: a 2-bit blind index on the team (four index values,
/// so lookups meet many false positives, and a team has many rows), and
/// plain columns to order and filter bounded lookups by.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "members", record_type = "member", tenant = tenant_id, primary_key = id)]
pub struct Member {
    pub id: i64,
    pub tenant_id: String,
    #[rowseal(
        encrypt,
        blind_index(name = "team_idx", bits = 2, normalize = "trim,lowercase")
    )]
    pub team: String,
    #[rowseal(encrypt)]
    pub name: String,
    /// Plain, nullable: NULLs sort last ascending, first descending.
    pub tier: Option<i32>,
    /// Plain.
    pub score: i64,
    /// Plain text.
    pub label: String,
}

impl Member {
    pub fn new(id: i64, tenant: &str, team: &str, score: i64) -> Self {
        Member {
            id,
            tenant_id: tenant.into(),
            team: team.into(),
            name: format!("member {id}"),
            tier: if id % 3 == 0 {
                None
            } else {
                Some((id % 4) as i32)
            },
            score,
            label: format!("label-{}", id % 2),
        }
    }
}

/// Columns the database fills: an identity primary key, a `DEFAULT now()`
/// timestamp and a default of the application's; the tenant is a UUID.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "notes", record_type = "note", tenant = org, primary_key = id)]
pub struct Note {
    #[rowseal(generated)]
    pub id: i64,
    pub org: Uuid,
    #[rowseal(encrypt)]
    pub body: String,
    #[rowseal(generated)]
    pub created_at: DateTime<Utc>,
    #[rowseal(generated = "7")]
    pub revision: i64,
}

impl Note {
    /// A note whose generated fields hold values the database must replace.
    pub fn new(org: Uuid, body: &str) -> Self {
        Note {
            id: -1,
            org,
            body: body.into(),
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            revision: -1,
        }
    }
}

/// A partial view of [`Patient`]: two of its three encrypted fields and its
/// primary key (the tenant is read without being declared); `notes` is
/// neither fetched nor decrypted.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(partial_of = Patient)]
pub struct PatientCard {
    pub id: Uuid,
    #[rowseal(encrypt)]
    pub name: String,
    #[rowseal(encrypt)]
    pub birth_date: Option<NaiveDate>,
}

impl From<&Patient> for PatientCard {
    fn from(p: &Patient) -> Self {
        PatientCard {
            id: p.id,
            name: p.name.clone(),
            birth_date: p.birth_date,
        }
    }
}

/// A partial view of a `kms`-mode model: one of its two encrypted fields.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(partial_of = Audited)]
pub struct AuditedAmount {
    pub key: String,
    pub org: String,
    #[rowseal(encrypt)]
    pub amount: Option<i64>,
}

/// A `sqlx::Type` enum stored as its integer.
#[derive(sqlx::Type, Debug, Clone, Copy, PartialEq)]
#[repr(i32)]
pub enum Priority {
    Low = 1,
    High = 2,
}

/// A `sqlx::Type` newtype over text.
#[derive(sqlx::Type, Debug, Clone, PartialEq)]
#[sqlx(transparent)]
pub struct Label(pub String);

/// Plain columns of the application's own sqlx types (`sql_type`), passed
/// through untouched.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "tickets", record_type = "ticket", tenant = tenant_id, primary_key = id)]
pub struct Ticket {
    pub id: i64,
    pub tenant_id: String,
    #[rowseal(sql_type = "INTEGER")]
    pub priority: Priority,
    #[rowseal(sql_type = "INTEGER")]
    pub escalation: Option<Priority>,
    #[rowseal(sql_type = "VARCHAR(64)")]
    pub label: Label,
    #[rowseal(encrypt)]
    pub body: String,
}

/// A partial view of [`Ticket`] with one of its `sql_type` fields.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(partial_of = Ticket)]
pub struct TicketPriority {
    pub id: i64,
    #[rowseal(sql_type = "INTEGER")]
    pub priority: Priority,
}

/// A composite primary key `(org, number)`: every tenant numbers its own
/// invoices from 1, so the same number belongs to several tenants. A
/// tenant-scoped blind index, a global one of 8 bits (false positives across
/// tenants), the number bound into the ciphertexts, and a `DEFAULT now()`
/// column.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "invoices",
    record_type = "invoice",
    tenant = org,
    primary_key = (org, number),
    bind_primary_key
)]
pub struct Invoice {
    pub org: Uuid,
    pub number: i64,
    #[rowseal(
        encrypt,
        blind_index(name = "inv_customer_idx", bits = 16, normalize = "trim,lowercase")
    )]
    pub customer: String,
    #[rowseal(
        encrypt,
        blind_index(name = "inv_reference_idx", bits = 8, scope = "global")
    )]
    pub reference: String,
    #[rowseal(encrypt)]
    pub amount_cents: i64,
    #[rowseal(generated)]
    pub issued_at: DateTime<Utc>,
}

impl Invoice {
    /// Invoice `number` of `org`; the reference is shared by the invoices
    /// of that number in every tenant (`REF-<number>`).
    pub fn new(org: Uuid, number: i64, customer: &str) -> Self {
        Invoice {
            org,
            number,
            customer: customer.into(),
            reference: format!("REF-{number}"),
            amount_cents: number * 1000 + i64::from(org.as_bytes()[0]),
            issued_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }
}
