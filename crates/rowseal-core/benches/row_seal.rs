#![allow(missing_docs, clippy::unwrap_used)]
//! Seal and open one row — three 31-byte fields plus one blind-index
//! HMAC-SHA256 — in format v2 (what new rows are) and format v1 (old rows,
//! made here through the test-only v1 entry point), against the bare
//! primitive calls the construction needs, measured in the same run.
//!
//! The bare baseline, per row, is exactly:
//! - seal: `AesGcmSiv::<Aes256Enc>::new(key)` once (a fresh key per row, as
//!   rowseal re-keys every write; the key comes from a precomputed table, so
//!   obtaining it costs nothing), then for each field a `Vec` of
//!   `plaintext + 16` bytes, `encrypt_in_place_detached` under the all-zero
//!   nonce with empty associated data, and the tag appended; then one
//!   HMAC-SHA256 of the indexed value from a keyed `hmac::Hmac` state built
//!   once and cloned per row;
//! - open: the cipher constructed once per row, for each field the ciphertext
//!   copied into a `Vec` and `decrypt_in_place_detached`, then the HMAC
//!   re-check of the indexed value.
//!
//! What rowseal does beyond it is its framing and the work that protects the
//! user: a random row salt, the row-key derivation (HMAC-SHA256), the key
//! commitment (SHA-256), the header encoding and parsing, per-field associated
//! data (record type, tenant, logical name, primary-key flag).
//!
//! Both use the same AES-GCM-SIV type (over the encrypt-only AES-256 key
//! schedule, see `crypto::aead`), so ratios measure framing, not a cipher
//! choice. The `aes-gcm-siv` API derives the per-nonce message keys (six AES
//! blocks, an AES-256 key schedule and a POLYVAL key) inside every encrypt or
//! decrypt call; the bare baseline pays that per field too.
//!
//! Run: `cargo bench -p rowseal-core --bench row_seal` (wall clock: median of
//! passes, best of alternating rounds, one thread). Instruction counts per
//! row: `scripts/callgrind-seal.sh`, which runs this binary as
//! `--callgrind-one <case> <rows>` under callgrind (cases: seal-v2, open-v2,
//! seal-v1, open-v1, seal-bare, open-bare).
//! Targets (for v2, the written format): rowseal at most 1.2x the
//! instructions of the bare calls, at least 800,000 rows/s on one core.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{AesGcmSiv, Nonce, Tag};

/// The same cipher type as rowseal's (see the module documentation).
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

fn rows(n: usize) -> Vec<Row> {
    let mut rng = rand::thread_rng();
    (0..n)
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
/// Nanoseconds this thread has spent on a CPU (Linux's schedstat), if
/// readable. On a shared machine, wall clock also counts the time other
/// processes held the core; on-CPU time is what "rows/s on one core" means.
fn on_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Median nanoseconds per row of `RUNS` passes over all rows: (wall clock,
/// on-CPU time; wall clock again where on-CPU time can't be read).
fn measure(mut pass: impl FnMut()) -> (f64, f64) {
    pass(); // warm-up
    let mut wall = Vec::with_capacity(RUNS);
    let mut cpu = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let c = on_cpu_ns();
        let t = Instant::now();
        pass();
        let w = t.elapsed().as_nanos() as f64 / ROWS as f64;
        wall.push(w);
        cpu.push(match (c, on_cpu_ns()) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / ROWS as f64,
            _ => w,
        });
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[RUNS / 2]
    };
    (median(wall), median(cpu))
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

struct BareSealed {
    fields: [Vec<u8>; 3],
    index: [u8; 32],
}

const ZERO_NONCE: [u8; 12] = [0; 12];

fn bare_encrypt(cipher: &Aes256GcmSiv, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + 16);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&ZERO_NONCE), b"", &mut out)
        .unwrap();
    out.extend_from_slice(&tag);
    out
}

fn bare_decrypt(cipher: &Aes256GcmSiv, sealed: &[u8]) -> Vec<u8> {
    let (ct, tag) = sealed.split_at(sealed.len() - 16);
    let mut out = ct.to_vec();
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&ZERO_NONCE),
            b"",
            &mut out,
            Tag::from_slice(tag),
        )
        .unwrap();
    out
}

fn seal_bare(key: &[u8; 32], mac: &Hmac<sha2::Sha256>, r: &Row) -> BareSealed {
    let cipher = Aes256GcmSiv::new(key.into());
    let mut m = mac.clone();
    m.update(&r.email);
    BareSealed {
        fields: [
            bare_encrypt(&cipher, &r.name),
            bare_encrypt(&cipher, &r.email),
            bare_encrypt(&cipher, &r.ssn),
        ],
        index: m.finalize().into_bytes().into(),
    }
}

fn open_bare(key: &[u8; 32], mac: &Hmac<sha2::Sha256>, s: &BareSealed) -> [Vec<u8>; 3] {
    let cipher = Aes256GcmSiv::new(key.into());
    let out = [
        bare_decrypt(&cipher, &s.fields[0]),
        bare_decrypt(&cipher, &s.fields[1]),
        bare_decrypt(&cipher, &s.fields[2]),
    ];
    let mut m = mac.clone();
    m.update(&out[1]);
    let index: [u8; 32] = m.finalize().into_bytes().into();
    assert_eq!(index, s.index);
    out
}

/// Everything a case needs, built before any measured work.
struct Setup {
    rt: tokio::runtime::Runtime,
    hierarchy: KeyHierarchy,
    keys: RecordKeys,
    bi: BlindIndexKey,
    mac: Hmac<sha2::Sha256>,
    present: FieldSet,
    data: Vec<Row>,
    /// One bare key per row of `data`.
    bare_keys: Vec<[u8; 32]>,
}

fn setup(rows_n: usize) -> Setup {
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
    let mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
    let bare_keys = (0..rows_n)
        .map(|_| {
            let mut k = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut k);
            k
        })
        .collect();
    Setup {
        rt,
        hierarchy,
        keys,
        bi,
        mac,
        present: FieldSet::new(["name", "email", "ssn"]).unwrap(),
        data: rows(rows_n),
        bare_keys,
    }
}

/// Runs one case over `iters` rows (cycling over a fixed set of prepared
/// rows), and nothing else: under callgrind, the difference between two
/// iteration counts is then the cost of exactly `difference` rows, every
/// fixed cost (start-up, key set-up, preparing rows) cancelling out.
fn callgrind_one(case: &str, iters: usize) {
    const PREPARED: usize = 256;
    let s = setup(PREPARED);
    let (keys, bi, mac, present) = (&s.keys, &s.bi, &s.mac, &s.present);
    let sealed_v2: Vec<Sealed> = s
        .data
        .iter()
        .map(|r| seal_v2(keys, present, bi, r))
        .collect();
    let sealed_v1: Vec<Sealed> = s.data.iter().map(|r| seal_v1(keys, bi, r)).collect();
    let sealed_bare: Vec<BareSealed> = s
        .data
        .iter()
        .zip(&s.bare_keys)
        .map(|(r, k)| seal_bare(k, mac, r))
        .collect();
    for i in 0..iters {
        let j = i % PREPARED;
        match case {
            "seal-v2" => drop(black_box(seal_v2(keys, present, bi, black_box(&s.data[j])))),
            "open-v2" => drop(black_box(open_rowseal(
                keys,
                present,
                bi,
                black_box(&sealed_v2[j]),
            ))),
            "seal-v1" => drop(black_box(seal_v1(keys, bi, black_box(&s.data[j])))),
            "open-v1" => drop(black_box(open_rowseal(
                keys,
                present,
                bi,
                black_box(&sealed_v1[j]),
            ))),
            "seal-bare" => drop(black_box(seal_bare(
                &s.bare_keys[j],
                mac,
                black_box(&s.data[j]),
            ))),
            "open-bare" => drop(black_box(open_bare(
                &s.bare_keys[j],
                mac,
                black_box(&sealed_bare[j]),
            ))),
            _ => usage(),
        }
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: row_seal [--callgrind-one <case> <rows>]; cases: seal-v2, open-v2, seal-v1, open-v1, seal-bare, open-bare"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--callgrind-one") {
        let (Some(case), Some(iters)) = (
            args.get(i + 1),
            args.get(i + 2).and_then(|n| n.parse().ok()),
        ) else {
            usage()
        };
        callgrind_one(case, iters);
        return;
    }

    let s = setup(ROWS);
    let (keys, bi, mac, present, data) = (&s.keys, &s.bi, &s.mac, &s.present, &s.data);
    let sealed_v2: Vec<Sealed> = data.iter().map(|r| seal_v2(keys, present, bi, r)).collect();
    let sealed_v1: Vec<Sealed> = data.iter().map(|r| seal_v1(keys, bi, r)).collect();
    let sealed_bare: Vec<BareSealed> = data
        .iter()
        .zip(&s.bare_keys)
        .map(|(r, k)| seal_bare(k, mac, r))
        .collect();
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
            for (r, k) in data.iter().zip(&s.bare_keys) {
                black_box(seal_bare(k, mac, black_box(r)));
            }
        }));
        seal1.push(measure(|| {
            for r in data {
                black_box(seal_v1(keys, bi, black_box(r)));
            }
        }));
        seal2.push(measure(|| {
            for r in data {
                black_box(seal_v2(keys, present, bi, black_box(r)));
            }
        }));
        // The same, building the row's FieldSet for every row.
        seal2_set.push(measure(|| {
            for r in data {
                let present = FieldSet::new(black_box(["name", "email", "ssn"])).unwrap();
                black_box(seal_v2(keys, &present, bi, black_box(r)));
            }
        }));
        open_base.push(measure(|| {
            for (sb, k) in sealed_bare.iter().zip(&s.bare_keys) {
                black_box(open_bare(k, mac, black_box(sb)));
            }
        }));
        open1.push(measure(|| {
            for sv in &sealed_v1 {
                black_box(open_rowseal(keys, present, bi, black_box(sv)));
            }
        }));
        open2.push(measure(|| {
            for sv in &sealed_v2 {
                black_box(open_rowseal(keys, present, bi, black_box(sv)));
            }
        }));
    }
    let best = |v: &[(f64, f64)]| {
        v.iter()
            .fold((f64::INFINITY, f64::INFINITY), |(w, c), &(a, b)| {
                (w.min(a), c.min(b))
            })
    };
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
        s.rt.block_on(async {
            for r in data {
                let row = s
                    .hierarchy
                    .new_row_key(&SPEC, "tenant-1", None, present)
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
    println!("wall = wall clock; cpu = this thread's on-CPU time (differs from wall when the machine is loaded); ratio on cpu time");
    println!(
        "{:<40} {:>9} {:>11} {:>9} {:>11} {:>7}",
        "", "wall ns", "wall rows/s", "cpu ns", "cpu rows/s", "ratio"
    );
    let line = |name: &str, (w, c): (f64, f64), base: (f64, f64)| {
        println!(
            "{name:<40} {w:>9.0} {:>11.0} {c:>9.0} {:>11.0} {:>7.2}",
            1e9 / w,
            1e9 / c,
            c / base.1
        );
    };
    line("seal: bare primitive calls", seal_base, seal_base);
    line("seal: rowseal v1 (RecordKeys)", seal1, seal_base);
    line("seal: rowseal v2 (RecordKeys)", seal2, seal_base);
    line("seal: rowseal v2, FieldSet per row", seal2_set, seal_base);
    line("seal: rowseal v2 (KeyHierarchy)", hierarchy_seal, seal_base);
    line("open: bare primitive calls", open_base, open_base);
    line("open: rowseal v1 (RecordKeys)", open1, open_base);
    line("open: rowseal v2 (RecordKeys)", open2, open_base);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "target (v2) >= 800,000 rows/s on one core (cpu time): seal {} ({:.0}/s), open {} ({:.0}/s)",
        verdict(1e9 / seal2.1 >= 800_000.0),
        1e9 / seal2.1,
        verdict(1e9 / open2.1 >= 800_000.0),
        1e9 / open2.1
    );
    println!("the 1.2x target is on instructions: scripts/callgrind-seal.sh");
}
