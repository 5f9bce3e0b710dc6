#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]
//! The key cache's memory for 1,000,000 tenants: a `KeyHierarchy` with the
//! default `CacheConfig` (2^20 entries per cache) reads 1,000,000 tenants'
//! keys from its key store, and the resident memory it gains is measured
//! (from `/proc/self/statm`; no custom allocator, so the figures are what
//! the process really holds, allocator overhead and moka's bookkeeping
//! included), per cache filled:
//!
//! 1. `tenant_keys`: `tenant_key(t, 1)`, one provider call each (the
//!    unwrapped tenant key: the tenant's name and an HMAC-SHA256 state);
//! 2. `record_keys`: `record_keys(spec, t, 1)`, the keys one record type's
//!    rows are opened and written with (two derivations, format 1 and 2);
//! 3. `current_versions`: `current_record_keys(spec, t)`, which also caches
//!    the version new rows of the tenant are written under.
//!
//! Then a control: the same 1,000,000 tenant names mapped to bare 32-byte
//! arrays in a `std` `HashMap`, the least any tenant-to-key map could hold.
//!
//! The key store's records (1,000,000 wrapped keys) are made before the
//! first measurement, and so are not counted. Linux only (`/proc`).
//!
//! Run: `cargo bench -p rowseal-core --bench cache_memory`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use rowseal_core::{
    EncryptionContext, KeyHierarchy, KeyProvider, KeyPurpose, KeyRecord, KeyScope, KeyState,
    KeyStore, LocalKeyProvider, MemoryKeyStore, RecordSpec,
};

const TENANTS: usize = 1_000_000;
const SPEC: RecordSpec = RecordSpec::new("patient", "patients");

fn tenant(i: usize) -> String {
    format!("tenant-{i:07}")
}

/// Resident pages of this process (`/proc/self/statm`, second field).
fn resident_pages() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm (Linux)");
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages in /proc/self/statm")
}

/// The page size, from `VmRSS` (kB) in `/proc/self/status` against statm's
/// resident pages (no libc call: `unsafe` is forbidden here).
fn page_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let pages = resident_pages();
    // Rounded to a power of two: the two reads are not simultaneous.
    (kb * 1024 / pages).next_power_of_two()
}

fn resident_bytes(page: u64) -> u64 {
    resident_pages() * page
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn report(what: &str, before: u64, after: u64, took: Duration) {
    let delta = after.saturating_sub(before);
    println!(
        "{what:<44} {:>9.1} MiB  {:>6.0} bytes/entry  ({took:.2?})",
        mib(delta),
        delta as f64 / TENANTS as f64
    );
}

/// Lets the hierarchy's sweeper run the caches' maintenance (moka applies
/// inserts and allocates its frequency sketch there), so that what is
/// measured is what stays.
fn settle() {
    std::thread::sleep(Duration::from_millis(2_500));
}

fn main() {
    let page = page_size();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let provider = Arc::new(LocalKeyProvider::generate());
    let store = Arc::new(MemoryKeyStore::new());

    // The key store: 1,000,000 tenant keys, wrapped by the local provider.
    let started = Instant::now();
    rt.block_on(async {
        for i in 0..TENANTS {
            let scope = KeyScope::Tenant(tenant(i));
            let ctx = EncryptionContext::stored_key(KeyPurpose::Tenant, &scope, 1);
            let key = provider.generate_data_key(&ctx).await.unwrap();
            let record = KeyRecord {
                purpose: KeyPurpose::Tenant,
                scope,
                version: 1,
                wrapped: Some(key.wrapped),
                state: KeyState::Active,
            };
            assert!(store.insert(&record).await.unwrap());
        }
    });
    println!(
        "key store: {TENANTS} wrapped tenant keys made in {:.2?} (not measured)",
        started.elapsed()
    );

    let keys = KeyHierarchy::new(provider.clone(), store.clone());
    settle();
    let base = resident_bytes(page);
    println!("resident before: {:.1} MiB (page {page} bytes)", mib(base));

    let started = Instant::now();
    rt.block_on(async {
        for i in 0..TENANTS {
            black_box(keys.tenant_key(&tenant(i), 1).await.unwrap());
        }
    });
    let took = started.elapsed();
    settle();
    let after_tenant = resident_bytes(page);
    report("1. tenant_keys (tenant_key)", base, after_tenant, took);

    let started = Instant::now();
    rt.block_on(async {
        for i in 0..TENANTS {
            black_box(keys.record_keys(&SPEC, &tenant(i), 1).await.unwrap());
        }
    });
    let took = started.elapsed();
    settle();
    let after_record = resident_bytes(page);
    report(
        "2. + record_keys (record_keys)",
        after_tenant,
        after_record,
        took,
    );

    let started = Instant::now();
    rt.block_on(async {
        for i in 0..TENANTS {
            black_box(keys.current_record_keys(&SPEC, &tenant(i)).await.unwrap());
        }
    });
    let took = started.elapsed();
    settle();
    let after_current = resident_bytes(page);
    report(
        "3. + current_versions (current_record_keys)",
        after_record,
        after_current,
        took,
    );
    report(
        "   all three caches, per tenant",
        base,
        after_current,
        Duration::ZERO,
    );

    let stats = keys.cache_stats_per_cache();
    for (name, s) in &stats {
        if s.entries > 0 || s.loads > 0 {
            println!(
                "   {name:<17} entries {:>8}  loads {:>8}  hits {:>8}  evictions {}",
                s.entries, s.loads, s.hits, s.evictions
            );
        }
    }
    let counts = |name: &str| stats.iter().find(|(n, _)| *n == name).unwrap().1;
    for name in ["tenant_keys", "record_keys", "current_versions"] {
        assert_eq!(
            counts(name).entries,
            TENANTS as u64,
            "{name}: every tenant cached"
        );
        assert_eq!(counts(name).evictions, 0, "{name}: nothing evicted");
        assert_eq!(counts(name).loads, TENANTS as u64, "{name}: one load each");
    }

    // The control, measured while the hierarchy is still alive (so that it
    // cannot reuse memory the caches let go of).
    let started = Instant::now();
    let mut control: HashMap<String, [u8; 32]> = HashMap::new();
    let mut rng = rand::thread_rng();
    for i in 0..TENANTS {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        control.insert(tenant(i), key);
    }
    let took = started.elapsed();
    let after_control = resident_bytes(page);
    report(
        "control: HashMap<String, [u8; 32]>",
        after_current,
        after_control,
        took,
    );
    let cache = after_tenant.saturating_sub(base) as f64;
    let floor = after_control.saturating_sub(after_current) as f64;
    if floor > 0.0 {
        println!("tenant_keys cache / control: {:.1}x", cache / floor);
    }
    black_box(&control);
    black_box(&keys);
}
