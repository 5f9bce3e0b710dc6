//! rowseal in one screen: envelope encryption per row, bound to record type and
//! tenant, on the embedded default (a generated local root key, no services).
//!
//! Run it with `cargo run -p quickstart`.
//!
//! This version shows the cryptographic core on its own: rows are kept in
//! memory as the bytes a database would store. The sqlx layer (SQLite file,
//! PostgreSQL, MariaDB) replaces that part as it lands.

use std::sync::Arc;

use rowseal::{KeyHierarchy, LocalKeyProvider, MemoryKeyStore, RecordSpec};

/// The record type: patients, one table, rows per tenant.
const PATIENT: RecordSpec = RecordSpec::new("patient", "patients").with_primary_key_bound(true);

/// A stored row: what the database would hold.
struct StoredRow {
    id: u64,
    tenant: &'static str,
    header: Vec<u8>,
    name: Vec<u8>,
    ssn: Vec<u8>,
}

fn hex(bytes: &[u8], max: usize) -> String {
    let shown: String = bytes.iter().take(max).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > max {
        format!("{shown}… ({} bytes)", bytes.len())
    } else {
        shown
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A development root key. In production: AWS KMS (feature `kms`), or a
    // keyring from ROWSEAL_LOCAL_KEYS / ROWSEAL_LOCAL_KEY_FILE.
    let provider = match LocalKeyProvider::from_env() {
        Ok(p) => p,
        Err(_) => LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring())?,
    };
    let keys = KeyHierarchy::new(Arc::new(provider), Arc::new(MemoryKeyStore::new()));

    println!("rowseal quickstart: two tenants, one table, every field sealed per row\n");
    let people = [
        (1, "clinic-a", "Ada Lovelace", "123-45-6789"),
        (2, "clinic-a", "Alan Turing", "987-65-4321"),
        (3, "clinic-b", "Grace Hopper", "555-12-0000"),
    ];
    let mut table = Vec::new();
    for (id, tenant, name, ssn) in people {
        let pk = u64::to_be_bytes(id);
        let row = keys.new_row_key(&PATIENT, tenant, Some(&pk)).await?;
        table.push(StoredRow {
            id,
            tenant,
            header: row.header_bytes(),
            name: row.seal("name", name.as_bytes())?,
            ssn: row.seal("ssn", ssn.as_bytes())?,
        });
    }

    println!(
        "{:<3} {:<9} {:<44} decrypted",
        "id", "tenant", "stored name column"
    );
    for r in &table {
        let row = keys
            .open_row_key(&PATIENT, r.tenant, Some(&r.id.to_be_bytes()), &r.header)
            .await?;
        let name = String::from_utf8(row.open("name", &r.name)?)?;
        let ssn = String::from_utf8(row.open("ssn", &r.ssn)?)?;
        println!(
            "{:<3} {:<9} {:<44} {name} / {ssn}",
            r.id,
            r.tenant,
            hex(&r.name, 16)
        );
    }

    // An attacker with write access to the database copies clinic-a's
    // ciphertext into clinic-b's row: it does not decrypt there.
    println!("\ncopy row 1's name ciphertext into row 3 (clinic-b):");
    let victim = &table[2];
    let row = keys
        .open_row_key(
            &PATIENT,
            victim.tenant,
            Some(&victim.id.to_be_bytes()),
            &victim.header,
        )
        .await?;
    match row.open("name", &table[0].name) {
        Ok(_) => println!("  decrypted (this must never happen)"),
        Err(e) => println!("  rejected: {e}"),
    }
    println!("copy row 1's name into its own ssn column:");
    let row = keys
        .open_row_key(
            &PATIENT,
            "clinic-a",
            Some(&1u64.to_be_bytes()),
            &table[0].header,
        )
        .await?;
    match row.open("ssn", &table[0].name) {
        Ok(_) => println!("  decrypted (this must never happen)"),
        Err(e) => println!("  rejected: {e}"),
    }
    println!("read row 1 as if it belonged to clinic-b:");
    match keys
        .open_row_key(
            &PATIENT,
            "clinic-b",
            Some(&1u64.to_be_bytes()),
            &table[0].header,
        )
        .await
    {
        Ok(_) => println!("  opened (this must never happen)"),
        Err(e) => println!("  rejected: {e}"),
    }

    // Key rotation: new rows use tenant key v2, old rows still read under v1
    // until `rowseal rotate` re-encrypts them.
    let v = keys.rotate_tenant_key("clinic-a").await?;
    let row = keys
        .new_row_key(&PATIENT, "clinic-a", Some(&4u64.to_be_bytes()))
        .await?;
    println!(
        "\nrotated clinic-a to tenant key v{v}; a new row is written under v{}",
        row.header().tenant_key_version().unwrap_or_default()
    );
    let old = keys
        .open_row_key(
            &PATIENT,
            "clinic-a",
            Some(&1u64.to_be_bytes()),
            &table[0].header,
        )
        .await?;
    println!(
        "row 1 (still on v{}) reads: {}",
        old.header().tenant_key_version().unwrap_or_default(),
        String::from_utf8(old.open("name", &table[0].name)?)?
    );
    Ok(())
}
