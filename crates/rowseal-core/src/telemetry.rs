//! rowseal's metrics: their names, and the code that emits the core's.
//!
//! Every metric goes through the [`metrics`](https://docs.rs/metrics) facade:
//! rowseal records, the application chooses the exporter (Prometheus,
//! StatsD, OpenTelemetry...) by installing a recorder. Without one, each
//! emission is a no-op. `docs/observability.md` lists every metric with its
//! labels and what it counts.
//!
//! Labels are bounded sets only: operations, outcomes, error kinds, table
//! names, cache names. Never a value, never a tenant id (a tenant in a label
//! would be one time series per tenant, and would copy tenant ids into the
//! metrics store).
//!
//! The core emits the key provider's calls (around every call the
//! [`KeyHierarchy`](crate::KeyHierarchy) makes) and the key caches' counters
//! (published from [`CacheStats`] by the caches' background sweep, and on
//! demand by [`KeyHierarchy::export_metrics`](crate::KeyHierarchy::export_metrics)).
//! The sqlx layer emits rows sealed and opened, decryption failures and
//! operation durations, under the names defined here.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::cache::CacheStats;
use crate::error::{Error, ErrorKind, ProviderErrorKind, Result};

/// Counter: key-provider calls made by the key hierarchy, by `operation`
/// (`generate_data_key`, `decrypt_data_key`) and `outcome` (`ok`, the
/// [`ProviderErrorKind`] of a failed call as [`provider_error_kind_label`]
/// spells it, the [`ErrorKind`] of any other error, or `cancelled` for a
/// call abandoned before it finished).
pub const PROVIDER_CALLS: &str = "rowseal_provider_calls_total";
/// Histogram, seconds: how long each key-provider call took, by `operation`.
pub const PROVIDER_CALL_DURATION: &str = "rowseal_provider_call_duration_seconds";
/// Counter: key-cache lookups answered from memory, by `cache`.
pub const KEY_CACHE_HITS: &str = "rowseal_key_cache_hits_total";
/// Counter: key-cache lookups that found no fresh entry, by `cache`.
pub const KEY_CACHE_MISSES: &str = "rowseal_key_cache_misses_total";
/// Counter: fetches the key caches ran (key-store reads, provider calls,
/// derivations): misses less those that joined a fetch in flight, by `cache`.
pub const KEY_CACHE_LOADS: &str = "rowseal_key_cache_loads_total";
/// Counter: entries evicted to keep a key cache within its bound, by `cache`.
pub const KEY_CACHE_EVICTIONS: &str = "rowseal_key_cache_evictions_total";
/// Counter: entries dropped because their lifetime ended, by `cache`.
pub const KEY_CACHE_EXPIRATIONS: &str = "rowseal_key_cache_expirations_total";
/// Gauge: entries held by the key caches, by `cache`.
pub const KEY_CACHE_ENTRIES: &str = "rowseal_key_cache_entries";
/// Counter (sqlx layer): rows sealed and written by a statement that
/// succeeded (inserts, updates, `update_fields` of an encrypted field), by
/// `table`.
pub const ROWS_SEALED: &str = "rowseal_rows_sealed_total";
/// Counter (sqlx layer): rows opened (decrypted and authenticated), by
/// `table`.
pub const ROWS_OPENED: &str = "rowseal_rows_opened_total";
/// Counter (sqlx layer): rows that failed to open, by `table` and `kind`
/// (the error's [`ErrorKind`], as [`error_kind_label`] spells it).
pub const DECRYPT_FAILURES: &str = "rowseal_decrypt_failures_total";
/// Histogram, seconds (sqlx layer): how long each `Encryptor` operation
/// took, by `operation` and `table`.
pub const OPERATION_DURATION: &str = "rowseal_operation_duration_seconds";
/// Counter (sqlx layer): `Encryptor` operations that returned an error, by
/// `operation`, `table` and `kind`.
pub const OPERATION_ERRORS: &str = "rowseal_operation_errors_total";

/// Registers a description (and unit) of every rowseal metric with the
/// installed recorder, for exporters that print them (Prometheus's `# HELP`
/// lines). Cheap, and safe to call more than once;
/// [`KeyHierarchy::export_metrics`](crate::KeyHierarchy::export_metrics)
/// calls it.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        PROVIDER_CALLS,
        "Key-provider calls made by the key hierarchy, by operation and outcome."
    );
    describe_histogram!(
        PROVIDER_CALL_DURATION,
        Unit::Seconds,
        "Duration of key-provider calls, by operation."
    );
    describe_counter!(KEY_CACHE_HITS, "Key-cache lookups answered from memory.");
    describe_counter!(
        KEY_CACHE_MISSES,
        "Key-cache lookups that found no fresh entry."
    );
    describe_counter!(
        KEY_CACHE_LOADS,
        "Fetches run by the key caches (key store, provider, derivation)."
    );
    describe_counter!(
        KEY_CACHE_EVICTIONS,
        "Key-cache entries evicted to stay within the bound."
    );
    describe_counter!(
        KEY_CACHE_EXPIRATIONS,
        "Key-cache entries dropped at the end of their lifetime."
    );
    describe_gauge!(KEY_CACHE_ENTRIES, "Entries held by the key caches.");
    describe_counter!(
        ROWS_SEALED,
        "Rows sealed and written by a statement that succeeded."
    );
    describe_counter!(ROWS_OPENED, "Rows decrypted and authenticated.");
    describe_counter!(DECRYPT_FAILURES, "Rows that failed to open, by kind.");
    describe_histogram!(
        OPERATION_DURATION,
        Unit::Seconds,
        "Duration of Encryptor operations, by operation and table."
    );
    describe_counter!(
        OPERATION_ERRORS,
        "Encryptor operations that returned an error, by kind."
    );
}

/// The label of an [`ErrorKind`]: `tampered`, `key_destroyed`,
/// `provider_unavailable`, `access_denied`, `conflict`, `unique_violation`,
/// `not_found`, `database`, `invalid_input`, `configuration`, `internal`.
///
/// ```
/// use rowseal_core::{telemetry, ErrorKind};
/// assert_eq!(telemetry::error_kind_label(ErrorKind::Tampered), "tampered");
/// ```
pub fn error_kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Tampered => "tampered",
        ErrorKind::KeyDestroyed => "key_destroyed",
        ErrorKind::ProviderUnavailable => "provider_unavailable",
        ErrorKind::AccessDenied => "access_denied",
        ErrorKind::Conflict => "conflict",
        ErrorKind::UniqueViolation => "unique_violation",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Database => "database",
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::Configuration => "configuration",
        ErrorKind::Internal => "internal",
    }
}

/// The label of a [`ProviderErrorKind`]: `access_denied`, `key_disabled`,
/// `key_not_found`, `invalid_ciphertext`, `throttled`, `unavailable`,
/// `timeout`, `config`, `key_not_allowed`, `other`.
pub fn provider_error_kind_label(kind: ProviderErrorKind) -> &'static str {
    match kind {
        ProviderErrorKind::AccessDenied => "access_denied",
        ProviderErrorKind::KeyDisabled => "key_disabled",
        ProviderErrorKind::KeyNotFound => "key_not_found",
        ProviderErrorKind::InvalidCiphertext => "invalid_ciphertext",
        ProviderErrorKind::Throttled => "throttled",
        ProviderErrorKind::Unavailable => "unavailable",
        ProviderErrorKind::Timeout => "timeout",
        ProviderErrorKind::Sealed => "sealed",
        ProviderErrorKind::Config => "config",
        ProviderErrorKind::KeyNotAllowed => "key_not_allowed",
        ProviderErrorKind::Other => "other",
    }
}

/// The `outcome` label of a finished provider call.
fn outcome_of<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(Error::Provider(p)) => provider_error_kind_label(p.kind()),
        Err(e) => error_kind_label(e.kind()),
    }
}

/// A key-provider operation, as the `operation` label names it (the
/// [`KeyProvider`](crate::KeyProvider) method).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProviderOp {
    /// `generate_data_key` (KMS `GenerateDataKey`).
    GenerateDataKey,
    /// `decrypt_data_key` (KMS `Decrypt`).
    DecryptDataKey,
}

impl ProviderOp {
    fn label(self) -> &'static str {
        match self {
            ProviderOp::GenerateDataKey => "generate_data_key",
            ProviderOp::DecryptDataKey => "decrypt_data_key",
        }
    }
}

/// Records one provider call when dropped: with the outcome set by
/// [`provider_call`] when the call finished, as `cancelled` otherwise (the
/// future was dropped while the provider was being asked: the request may
/// well have reached it).
struct CallRecord {
    op: ProviderOp,
    start: Instant,
    outcome: &'static str,
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        let op = self.op.label();
        metrics::counter!(PROVIDER_CALLS, "operation" => op, "outcome" => self.outcome)
            .increment(1);
        metrics::histogram!(PROVIDER_CALL_DURATION, "operation" => op)
            .record(self.start.elapsed().as_secs_f64());
    }
}

/// Runs one key-provider call, counted by operation and outcome and timed.
pub(crate) async fn provider_call<T>(
    op: ProviderOp,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    let mut record = CallRecord {
        op,
        start: Instant::now(),
        outcome: "cancelled",
    };
    let result = call.await;
    record.outcome = outcome_of(&result);
    result
}

/// Publishes a hierarchy's cache counters ([`CacheStats`], cumulative and
/// per hierarchy) to the recorder as increments: each call adds what grew
/// since the last, so that several hierarchies in one process add up, and
/// every hit, miss, load, eviction and expiration is published exactly once
/// whoever publishes (the sweep thread or
/// [`KeyHierarchy::export_metrics`](crate::KeyHierarchy::export_metrics)).
#[derive(Debug, Default)]
pub(crate) struct CacheExporter {
    /// What was published, per cache.
    published: Mutex<Vec<(&'static str, CacheStats)>>,
}

impl CacheExporter {
    /// Publishes what grew since the last call.
    pub(crate) fn publish(&self, now: &[(&'static str, CacheStats)]) {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for &(cache, stats) in now {
            let at = match published.iter().position(|(c, _)| *c == cache) {
                Some(i) => i,
                None => {
                    published.push((cache, CacheStats::default()));
                    published.len() - 1
                }
            };
            let Some((_, last)) = published.get_mut(at) else {
                continue;
            };
            for (name, was, is) in [
                (KEY_CACHE_HITS, &mut last.hits, stats.hits),
                (KEY_CACHE_MISSES, &mut last.misses, stats.misses),
                (KEY_CACHE_LOADS, &mut last.loads, stats.loads),
                (KEY_CACHE_EVICTIONS, &mut last.evictions, stats.evictions),
                (
                    KEY_CACHE_EXPIRATIONS,
                    &mut last.expirations,
                    stats.expirations,
                ),
            ] {
                // Counters only grow; a reading behind the last one (a
                // racing reader) publishes nothing until it is passed.
                if is > *was {
                    metrics::counter!(name, "cache" => cache).increment(is - *was);
                    *was = is;
                }
            }
            if stats.entries != last.entries {
                // Entries as a gauge moved by differences: the sum over
                // every hierarchy of the process.
                let delta = stats.entries as f64 - last.entries as f64;
                metrics::gauge!(KEY_CACHE_ENTRIES, "cache" => cache).increment(delta);
                last.entries = stats.entries;
            }
        }
    }

    /// The hierarchy is going away: publishes its last increments, and takes
    /// its entries off the gauge.
    pub(crate) fn retire(&self, now: &[(&'static str, CacheStats)]) {
        self.publish(now);
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (cache, last) in published.iter_mut() {
            if last.entries > 0 {
                metrics::gauge!(KEY_CACHE_ENTRIES, "cache" => *cache)
                    .decrement(last.entries as f64);
                last.entries = 0;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use async_trait::async_trait;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    use metrics_util::MetricKind;

    use super::*;
    use crate::format::wrapped::WrappedKey;
    use crate::provider::{DataKey, EncryptionContext, KeyProvider};
    use crate::secret::SecretKey;
    use crate::{
        FieldName, FieldSet, KeyHierarchy, LocalKeyProvider, MemoryKeyStore, ProviderError,
        RecordSpec,
    };

    /// Values by metric name and sorted labels.
    type Values = HashMap<(String, Vec<(String, String)>), f64>;

    /// Every counter and gauge of a snapshot (histograms: how many values),
    /// by name and sorted labels.
    fn values(snap: &Snapshotter) -> Values {
        let mut out = HashMap::new();
        for (key, _, _, value) in snap.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let v = match (kind, value) {
                (MetricKind::Counter, DebugValue::Counter(c)) => c as f64,
                (MetricKind::Gauge, DebugValue::Gauge(g)) => g.into_inner(),
                (MetricKind::Histogram, DebugValue::Histogram(h)) => h.len() as f64,
                _ => continue,
            };
            out.insert((key.name().to_owned(), labels), v);
        }
        out
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        v.sort();
        v
    }

    fn get(m: &Values, name: &str, l: &[(&str, &str)]) -> f64 {
        m.get(&(name.to_owned(), labels(l))).copied().unwrap_or(0.0)
    }

    /// A local provider whose `decrypt_data_key` fails with `fail` while
    /// it is set.
    #[derive(Debug)]
    struct Flaky {
        inner: LocalKeyProvider,
        fail: std::sync::Mutex<Option<ProviderErrorKind>>,
    }

    #[async_trait]
    impl KeyProvider for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn current_key_id(&self) -> &str {
            self.inner.current_key_id()
        }
        async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey> {
            self.inner.generate_data_key(context).await
        }
        async fn decrypt_data_key(
            &self,
            wrapped: &WrappedKey,
            context: &EncryptionContext,
        ) -> Result<SecretKey> {
            let fail = *self.fail.lock().unwrap();
            match fail {
                Some(kind) => Err(ProviderError::new(kind, "injected").into()),
                None => self.inner.decrypt_data_key(wrapped, context).await,
            }
        }
        async fn reencrypt_data_key(
            &self,
            wrapped: &WrappedKey,
            context: &EncryptionContext,
            destination_key_id: &str,
        ) -> Result<WrappedKey> {
            self.inner
                .reencrypt_data_key(wrapped, context, destination_key_id)
                .await
        }
    }

    const SPEC: RecordSpec = RecordSpec::new("user", "users");
    const EMAIL: FieldName = FieldName::new("email", "email");

    #[test]
    fn provider_calls_are_counted_by_operation_and_outcome() {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                let local =
                    LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring())
                        .unwrap();
                let provider = Arc::new(Flaky {
                    inner: local,
                    fail: std::sync::Mutex::new(None),
                });
                let store = Arc::new(MemoryKeyStore::new());
                let keys = KeyHierarchy::new(provider.clone(), store.clone());
                let present = FieldSet::new(["email"]).unwrap();
                // Two tenants: two GenerateDataKey calls (their tenant keys,
                // seeded into the cache: no Decrypt).
                let mut headers = Vec::new();
                for t in ["t1", "t2"] {
                    let row = keys.new_row_key(&SPEC, t, None, &present).await.unwrap();
                    let sealed = row.seal(EMAIL, b"a@b.c").unwrap();
                    headers.push((t, row.header_bytes(), sealed));
                }
                // A cold hierarchy over the same store: one Decrypt per
                // tenant, the first denied, then both fine.
                let cold = KeyHierarchy::new(provider.clone(), store.clone());
                *provider.fail.lock().unwrap() = Some(ProviderErrorKind::AccessDenied);
                let (t, h, _) = &headers[0];
                let e = cold
                    .open_row_key(&SPEC, t, None, h, &present)
                    .await
                    .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::AccessDenied);
                *provider.fail.lock().unwrap() = Some(ProviderErrorKind::Throttled);
                assert!(cold
                    .open_row_key(&SPEC, t, None, h, &present)
                    .await
                    .is_err());
                *provider.fail.lock().unwrap() = None;
                for (t, h, sealed) in &headers {
                    let row = cold
                        .open_row_key(&SPEC, t, None, h, &present)
                        .await
                        .unwrap();
                    assert_eq!(row.open(EMAIL, sealed).unwrap(), b"a@b.c");
                }
                // Cached now: no more calls.
                for (t, h, _) in &headers {
                    cold.open_row_key(&SPEC, t, None, h, &present)
                        .await
                        .unwrap();
                }
            });
        });
        let m = values(&snap);
        let calls = |op, outcome| {
            get(
                &m,
                PROVIDER_CALLS,
                &[("operation", op), ("outcome", outcome)],
            )
        };
        assert_eq!(calls("generate_data_key", "ok"), 2.0, "{m:?}");
        assert_eq!(calls("decrypt_data_key", "access_denied"), 1.0, "{m:?}");
        assert_eq!(calls("decrypt_data_key", "throttled"), 1.0, "{m:?}");
        assert_eq!(calls("decrypt_data_key", "ok"), 2.0, "{m:?}");
        // One duration per call.
        assert_eq!(
            get(
                &m,
                PROVIDER_CALL_DURATION,
                &[("operation", "decrypt_data_key")]
            ),
            4.0
        );
        assert_eq!(
            get(
                &m,
                PROVIDER_CALL_DURATION,
                &[("operation", "generate_data_key")]
            ),
            2.0
        );
        // Nothing else carries a tenant.
        assert!(
            !format!("{m:?}").contains("t1") && !format!("{m:?}").contains("t2"),
            "{m:?}"
        );
    }

    #[test]
    fn a_call_dropped_before_it_finished_is_counted_as_cancelled() {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async {
                let never = provider_call(ProviderOp::DecryptDataKey, async {
                    std::future::pending::<Result<()>>().await
                });
                let r = tokio::time::timeout(std::time::Duration::from_millis(1), never).await;
                assert!(r.is_err());
            });
        });
        let m = values(&snap);
        assert_eq!(
            get(
                &m,
                PROVIDER_CALLS,
                &[("operation", "decrypt_data_key"), ("outcome", "cancelled")]
            ),
            1.0,
            "{m:?}"
        );
    }

    fn stats(hits: u64, misses: u64, evictions: u64, entries: u64) -> CacheStats {
        CacheStats {
            hits,
            misses,
            loads: misses,
            evictions,
            expirations: 0,
            entries,
        }
    }

    #[test]
    fn cache_counters_are_published_once_as_increments() {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let a = CacheExporter::default();
            let b = CacheExporter::default();
            a.publish(&[("tenant_keys", stats(3, 2, 0, 2))]);
            // Published again with nothing new: nothing added.
            a.publish(&[("tenant_keys", stats(3, 2, 0, 2))]);
            // A reading behind the last (a racing reader): nothing either.
            a.publish(&[("tenant_keys", stats(1, 1, 0, 2))]);
            a.publish(&[("tenant_keys", stats(10, 4, 1, 3))]);
            // A second hierarchy adds up.
            b.publish(&[
                ("tenant_keys", stats(5, 1, 0, 1)),
                ("record_keys", stats(7, 0, 0, 0)),
            ]);
            b.retire(&[
                ("tenant_keys", stats(6, 1, 0, 1)),
                ("record_keys", stats(7, 0, 0, 0)),
            ]);
        });
        let m = values(&snap);
        let tk = [("cache", "tenant_keys")];
        assert_eq!(get(&m, KEY_CACHE_HITS, &tk), 16.0, "{m:?}");
        assert_eq!(get(&m, KEY_CACHE_MISSES, &tk), 5.0, "{m:?}");
        assert_eq!(get(&m, KEY_CACHE_LOADS, &tk), 5.0, "{m:?}");
        assert_eq!(get(&m, KEY_CACHE_EVICTIONS, &tk), 1.0, "{m:?}");
        assert_eq!(
            get(&m, KEY_CACHE_HITS, &[("cache", "record_keys")]),
            7.0,
            "{m:?}"
        );
        // `a` holds 3 entries; `b` retired, taking its 1 off.
        assert_eq!(get(&m, KEY_CACHE_ENTRIES, &tk), 3.0, "{m:?}");
    }

    #[test]
    fn a_hierarchy_exports_its_cache_counters_exactly() {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (expected, elapsed) = metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                let local =
                    LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring())
                        .unwrap();
                // The default lifetime: the sweep thread's first run is a
                // second after the hierarchy is made.
                let created = Instant::now();
                let keys = KeyHierarchy::new(Arc::new(local), Arc::new(MemoryKeyStore::new()));
                let present = FieldSet::new(["email"]).unwrap();
                for t in ["t1", "t1", "t2", "t1"] {
                    keys.new_row_key(&SPEC, t, None, &present).await.unwrap();
                }
                keys.export_metrics();
                let stats = keys.cache_stats_per_cache();
                (stats, created.elapsed())
            })
        });
        let m = values(&snap);
        let total: u64 = expected.iter().map(|(_, s)| s.hits + s.misses).sum();
        assert!(total > 0, "{expected:?}");
        for (cache, s) in &expected {
            let l = [("cache", *cache)];
            let published = [
                (get(&m, KEY_CACHE_HITS, &l), s.hits),
                (get(&m, KEY_CACHE_MISSES, &l), s.misses),
                (get(&m, KEY_CACHE_LOADS, &l), s.loads),
            ];
            for (got, want) in published {
                if elapsed < std::time::Duration::from_millis(900) {
                    // The sweep thread has not run: everything was published
                    // here, to this thread's recorder.
                    assert_eq!(got, want as f64, "{cache}: {m:?}");
                } else {
                    // It may have published part of it to the global
                    // recorder (none here): never more than counted.
                    assert!(got <= want as f64, "{cache}: {m:?}");
                }
            }
        }
    }
}
