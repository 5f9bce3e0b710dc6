#![allow(missing_docs, clippy::unwrap_used)]
//! Seal and open one row — three 31-byte fields plus one blind-index
//! HMAC-SHA256 — in format v2 (what new rows are) and format v1 (old rows,
//! made here through the test-only v1 entry point), against the
//! raw-primitive floor measured in the same run: the same AES-256-GCM-SIV and
//! HMAC-SHA256 calls with no rowseal framing (no header, no row-key
//! derivation, no key commitment, no associated data).
//!
//! The floor uses the same AES-GCM-SIV type as rowseal (over the encrypt-only
//! AES-256 key schedule, see `crypto::aead`).
//!
//! Run: `cargo bench -p rowseal-core --bench row_seal`. One thread, one core.
//! Targets (for v2, the written format): rowseal at most 1.5x the floor, at
//! least 400,000 rows/s.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use aes_gcm_siv::aead::{Aead, KeyInit};
use aes_gcm_siv::{AesGcmSiv, Nonce};

/// The floor uses the same cipher type as rowseal (AES-256-GCM-SIV over the
/// encrypt-only key schedule), so the ratio measures framing, not a cipher
/// choice.
type Aes256GcmSiv = AesGcmSiv<aes::Aes256Enc>;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rowseal_core::{
    BlindIndexKey, FieldName, FieldSet, KeyHierarchy, KeyScope, LocalKeyProvider, MemoryKeyStore,
    RecordKeys, RecordSpec,
};

const SPEC: RecordSpec = RecordSpec::new("patient", "patients");
const ROWS: usize = 20_000;
const RUNS: usize = 15;
const FIELD_LEN: usize = 31;
const NAME: FieldName = FieldName::same("name");
const EMAIL: FieldName = FieldName::same("email");
const SSN: FieldName = FieldName::same("ssn");

struct Row {
    name: [u8; FIELD_LEN],
    email: [u8; FIELD_LEN],
    ssn: [u8; FIELD_LEN],
}

fn rows() -> Vec<Row> {
    let mut rng = rand::thread_rng();
    (0..ROWS)
        .map(|_| {
            let mut r = Row {
                name: [0; FIELD_LEN],
                email: [0; FIELD_LEN],
                ssn: [0; FIELD_LEN],
            };
            rng.fill_bytes(&mut r.name);
            rng.fill_bytes(&mut r.email);
            rng.fill_bytes(&mut r.ssn);
            r
        })
        .collect()
}

/// Median nanoseconds per row of `RUNS` passes over all rows.
fn measure(mut pass: impl FnMut()) -> f64 {
    pass(); // warm-up
    let mut samples: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            pass();
            t.elapsed().as_nanos() as f64 / ROWS as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[RUNS / 2]
}

struct Sealed {
    header: Vec<u8>,
    fields: [Vec<u8>; 3],
    index: [u8; 32],
}

/// Format v2: `present` is the row's set of non-NULL encrypted fields (all
/// three here), built once, as a caller can for its all-present rows.
fn seal_v2(keys: &RecordKeys, present: &FieldSet, bi: &BlindIndexKey, r: &Row) -> Sealed {
    let row = keys.new_row(None, present).unwrap();
    Sealed {
        header: row.header_bytes(),
        fields: [
            row.seal(NAME, &r.name).unwrap(),
            row.seal(EMAIL, &r.email).unwrap(),
            row.seal(SSN, &r.ssn).unwrap(),
        ],
        index: bi.compute(&r.email),
    }
}

/// Format v1 (old rows), through the test-only entry point.
fn seal_v1(keys: &RecordKeys, bi: &BlindIndexKey, r: &Row) -> Sealed {
    let row = keys.new_row_v1(None).unwrap();
    Sealed {
        header: row.header_bytes(),
        fields: [
            row.seal(NAME, &r.name).unwrap(),
            row.seal(EMAIL, &r.email).unwrap(),
            row.seal(SSN, &r.ssn).unwrap(),
        ],
        index: bi.compute(&r.email),
    }
}

/// Opens a row of either format (the header says which).
fn open_rowseal(
    keys: &RecordKeys,
    present: &FieldSet,
    bi: &BlindIndexKey,
    s: &Sealed,
) -> [Vec<u8>; 3] {
    let row = keys.open_row(None, &s.header, present).unwrap();
    let out = [
        row.open(NAME, &s.fields[0]).unwrap(),
        row.open(EMAIL, &s.fields[1]).unwrap(),
        row.open(SSN, &s.fields[2]).unwrap(),
    ];
    // A lookup re-checks the decrypted value against the index.
    assert_eq!(bi.compute(&out[1]), s.index);
    out
}

struct FloorSealed {
    nonces: [[u8; 12]; 3],
    fields: [Vec<u8>; 3],
    index: [u8; 32],
}

fn seal_floor(cipher: &Aes256GcmSiv, mac: &Hmac<sha2::Sha256>, r: &Row) -> FloorSealed {
    let mut rng = rand::thread_rng();
    let mut nonces = [[0u8; 12]; 3];
    for n in &mut nonces {
        rng.fill_bytes(n);
    }
    let enc = |n: &[u8; 12], p: &[u8]| cipher.encrypt(Nonce::from_slice(n), p).unwrap();
    let mut m = mac.clone();
    m.update(&r.email);
    FloorSealed {
        fields: [
            enc(&nonces[0], &r.name),
            enc(&nonces[1], &r.email),
            enc(&nonces[2], &r.ssn),
        ],
        nonces,
        index: m.finalize().into_bytes().into(),
    }
}

fn open_floor(cipher: &Aes256GcmSiv, mac: &Hmac<sha2::Sha256>, s: &FloorSealed) -> [Vec<u8>; 3] {
    let dec = |i: usize| {
        cipher
            .decrypt(Nonce::from_slice(&s.nonces[i]), s.fields[i].as_slice())
            .unwrap()
    };
    let out = [dec(0), dec(1), dec(2)];
    let mut m = mac.clone();
    m.update(&out[1]);
    let index: [u8; 32] = m.finalize().into_bytes().into();
    assert_eq!(index, s.index);
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let provider =
        LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring()).unwrap();
    let hierarchy = KeyHierarchy::new(Arc::new(provider), Arc::new(MemoryKeyStore::new()));
    let (tenant_key, index_key) = rt.block_on(async {
        (
            hierarchy.current_tenant_key("tenant-1").await.unwrap(),
            hierarchy
                .current_index_key(&KeyScope::Tenant("tenant-1".into()))
                .await
                .unwrap(),
        )
    });
    let keys = tenant_key.record_keys(&SPEC).unwrap();
    let bi = index_key.blind_index_key("patient", "email").unwrap();

    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let cipher = Aes256GcmSiv::new((&key).into());
    let mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();

    let data = rows();
    let present = FieldSet::new(["name", "email", "ssn"]).unwrap();
    let sealed_v2: Vec<Sealed> = data
        .iter()
        .map(|r| seal_v2(&keys, &present, &bi, r))
        .collect();
    let sealed_v1: Vec<Sealed> = data.iter().map(|r| seal_v1(&keys, &bi, r)).collect();
    let floor_sealed: Vec<FloorSealed> =
        data.iter().map(|r| seal_floor(&cipher, &mac, r)).collect();
    assert_eq!(sealed_v2[0].header.len(), 56);
    assert_eq!(sealed_v1[0].header.len(), 71);
    assert_eq!(sealed_v2[0].fields[0].len(), FIELD_LEN + 16);
    assert_eq!(sealed_v1[0].fields[0].len(), FIELD_LEN + 29);

    // Interleave the measurements, so drift in machine load hits all alike.
    let mut seal_base = Vec::new();
    let mut seal1 = Vec::new();
    let mut seal2 = Vec::new();
    let mut seal2_set = Vec::new();
    let mut open_base = Vec::new();
    let mut open1 = Vec::new();
    let mut open2 = Vec::new();
    for _ in 0..3 {
        seal_base.push(measure(|| {
            for r in &data {
                black_box(seal_floor(&cipher, &mac, black_box(r)));
            }
        }));
        seal1.push(measure(|| {
            for r in &data {
                black_box(seal_v1(&keys, &bi, black_box(r)));
            }
        }));
        seal2.push(measure(|| {
            for r in &data {
                black_box(seal_v2(&keys, &present, &bi, black_box(r)));
            }
        }));
        // The same, building the row's FieldSet for every row.
        seal2_set.push(measure(|| {
            for r in &data {
                let present = FieldSet::new(black_box(["name", "email", "ssn"])).unwrap();
                black_box(seal_v2(&keys, &present, &bi, black_box(r)));
            }
        }));
        open_base.push(measure(|| {
            for s in &floor_sealed {
                black_box(open_floor(&cipher, &mac, black_box(s)));
            }
        }));
        open1.push(measure(|| {
            for s in &sealed_v1 {
                black_box(open_rowseal(&keys, &present, &bi, black_box(s)));
            }
        }));
        open2.push(measure(|| {
            for s in &sealed_v2 {
                black_box(open_rowseal(&keys, &present, &bi, black_box(s)));
            }
        }));
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (seal_base, seal1, seal2, seal2_set) = (
        best(&seal_base),
        best(&seal1),
        best(&seal2),
        best(&seal2_set),
    );
    let (open_base, open1, open2) = (best(&open_base), best(&open1), best(&open2));

    // The cold path: through the hierarchy, with per-row record setup and
    // cache look-ups (what a single-row insert pays).
    let hierarchy_seal = measure(|| {
        rt.block_on(async {
            for r in &data {
                let row = hierarchy
                    .new_row_key(&SPEC, "tenant-1", None, &present)
                    .await
                    .unwrap();
                black_box((
                    row.header_bytes(),
                    row.seal(NAME, &r.name).unwrap(),
                    row.seal(EMAIL, &r.email).unwrap(),
                    row.seal(SSN, &r.ssn).unwrap(),
                    bi.compute(&r.email),
                ));
            }
        })
    });

    println!("row = 3 fields x {FIELD_LEN} bytes + 1 HMAC-SHA256 blind index; {ROWS} rows x {RUNS} runs, median, best of 3; one thread");
    println!(
        "{:<40} {:>10} {:>14} {:>8}",
        "", "ns/row", "rows/s", "ratio"
    );
    let line = |name: &str, ns: f64, base: f64| {
        println!(
            "{name:<40} {ns:>10.0} {:>14.0} {:>8.2}",
            1e9 / ns,
            ns / base
        );
    };
    line("seal: raw-primitive floor", seal_base, seal_base);
    line("seal: rowseal v1 (RecordKeys)", seal1, seal_base);
    line("seal: rowseal v2 (RecordKeys)", seal2, seal_base);
    line("seal: rowseal v2, FieldSet per row", seal2_set, seal_base);
    line("seal: rowseal v2 (KeyHierarchy)", hierarchy_seal, seal_base);
    line("open: raw-primitive floor", open_base, open_base);
    line("open: rowseal v1 (RecordKeys)", open1, open_base);
    line("open: rowseal v2 (RecordKeys)", open2, open_base);
    println!(
        "v2 / v1 per row: seal {:.2}, open {:.2}",
        seal2 / seal1,
        open2 / open1
    );
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "target (v2) seal <= 1.5x floor: {} ({:.2}x); open <= 1.5x floor: {} ({:.2}x)",
        verdict(seal2 / seal_base <= 1.5),
        seal2 / seal_base,
        verdict(open2 / open_base <= 1.5),
        open2 / open_base
    );
    println!(
        "target (v2) >= 400,000 rows/s: seal {} ({:.0}/s), open {} ({:.0}/s)",
        verdict(1e9 / seal2 >= 400_000.0),
        1e9 / seal2,
        verdict(1e9 / open2 >= 400_000.0),
        1e9 / open2
    );
}
