//! Tracing spans and metrics of the [`Encryptor`](crate::Encryptor)'s
//! operations. The metric names are `rowseal_core::telemetry`'s (one list
//! for the whole library, described in `docs/observability.md`).
//!
//! - Every public operation runs in an `INFO` span `rowseal.<operation>`
//!   with `table`, and, once it finishes, `rows` (rows written, returned,
//!   opened or deleted), `elapsed_ms`, and `error.kind` if it failed. The
//!   span has a `tenant` field, filled only with
//!   [`Encryptor::with_tenant_in_traces`](crate::Encryptor::with_tenant_in_traces).
//!   No span ever records a value (a field, a lookup value, a key).
//! - Each operation's duration goes to `rowseal_operation_duration_seconds`
//!   and its failures to `rowseal_operation_errors_total`; rows sealed and
//!   opened, and rows that failed to open, are counted where the rows are
//!   sealed and opened, once per batch (not per row, and never on a crypto
//!   pool thread).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::stream::{BoxStream, Stream};
use rowseal_core::telemetry::{
    error_kind_label, DECRYPT_FAILURES, OPERATION_DURATION, OPERATION_ERRORS, ROWS_OPENED,
    ROWS_SEALED,
};
use tracing::Instrument as _;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::tenant_scope::TenantScope;

/// An [`Op`] for operation `$op` (a string literal: the span is named
/// `rowseal.$op`) on table `$table`. `$tenant` (an `Option<&str>`) is
/// evaluated, and recorded, only if `$enc` records tenants in traces.
macro_rules! op {
    ($enc:expr, $op:literal, $table:expr, $tenant:expr) => {{
        let op = $crate::telemetry::Op::new(
            $op,
            $table,
            ::tracing::info_span!(
                concat!("rowseal.", $op),
                table = $table,
                rows = ::tracing::field::Empty,
                tenant = ::tracing::field::Empty,
                elapsed_ms = ::tracing::field::Empty,
                error.kind = ::tracing::field::Empty,
            ),
        );
        if $enc.tenant_in_traces {
            op.record_tenant($tenant);
        }
        op
    }};
}
pub(crate) use op;

/// One operation in progress: its span, and what its metrics are labelled
/// with.
pub(crate) struct Op {
    operation: &'static str,
    table: &'static str,
    span: tracing::Span,
}

impl Op {
    /// Use [`op!`].
    pub(crate) fn new(operation: &'static str, table: &'static str, span: tracing::Span) -> Self {
        Op {
            operation,
            table,
            span,
        }
    }

    /// Records the tenant in the span (only when the encryptor says so:
    /// see [`op!`]).
    pub(crate) fn record_tenant(&self, tenant: Option<&str>) {
        if let Some(t) = tenant {
            self.span.record("tenant", t);
        }
    }

    /// Runs `fut` in the span, then records its row count (`rows` of its
    /// result), duration and error kind.
    pub(crate) async fn run<T, F>(self, fut: F, rows: impl FnOnce(&T) -> u64) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let result = fut.instrument(self.span.clone()).await;
        match &result {
            Ok(v) => self.finish(start, rows(v), None),
            Err(e) => self.finish(start, 0, Some(e)),
        }
        result
    }

    /// Wraps a stream: it is polled in the span, and counted and timed when
    /// it ends or is dropped (`rows`: the items it yielded; `error.kind`:
    /// the first error it yielded).
    pub(crate) fn stream<'a, T: 'a>(self, inner: BoxStream<'a, Result<T>>) -> OpStream<'a, T> {
        OpStream {
            inner,
            op: Some(self),
            start: Instant::now(),
            rows: 0,
            error: None,
        }
    }

    fn finish(&self, start: Instant, rows: u64, error: Option<&Error>) {
        let elapsed = start.elapsed();
        self.span.record("rows", rows);
        self.span
            .record("elapsed_ms", elapsed.as_secs_f64() * 1000.0);
        metrics::histogram!(
            OPERATION_DURATION,
            "operation" => self.operation,
            "table" => self.table
        )
        .record(elapsed.as_secs_f64());
        if let Some(e) = error {
            let kind = error_kind_label(e.kind());
            self.span.record("error.kind", kind);
            metrics::counter!(
                OPERATION_ERRORS,
                "operation" => self.operation,
                "table" => self.table,
                "kind" => kind
            )
            .increment(1);
        }
    }
}

/// A stream run as an [`Op`] (see [`Op::stream`]).
pub(crate) struct OpStream<'a, T> {
    inner: BoxStream<'a, Result<T>>,
    /// `None` once finished.
    op: Option<Op>,
    start: Instant,
    rows: u64,
    error: Option<Error>,
}

impl<T> OpStream<'_, T> {
    fn end(&mut self) {
        if let Some(op) = self.op.take() {
            op.finish(self.start, self.rows, self.error.as_ref());
        }
    }
}

impl<T> Stream for OpStream<'_, T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = &mut *self;
        let polled = match &this.op {
            Some(op) => {
                let _entered = op.span.enter();
                this.inner.as_mut().poll_next(cx)
            }
            None => this.inner.as_mut().poll_next(cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(_))) => this.rows += 1,
            Poll::Ready(Some(Err(e))) => {
                if this.error.is_none() {
                    this.error = Some(e.clone());
                }
            }
            Poll::Ready(None) => this.end(),
            Poll::Pending => {}
        }
        polled
    }
}

impl<T> Drop for OpStream<'_, T> {
    fn drop(&mut self) {
        self.end();
    }
}

/// The tenant of a read's scope (none for [`TenantScope::Any`]).
pub(crate) fn scope_tenant<'a>(scope: &TenantScope<'a>) -> Option<&'a str> {
    match *scope {
        TenantScope::One(t) => Some(t),
        TenantScope::Any => None,
    }
}

/// Counts `rows` rows of `model` sealed and written.
pub(crate) fn rows_sealed(model: &'static Model, rows: u64) {
    if rows > 0 {
        metrics::counter!(ROWS_SEALED, "table" => model.table()).increment(rows);
    }
}

/// Counts a batch's rows opened, and those that failed to open by kind.
pub(crate) fn rows_opened<T>(model: &'static Model, results: &[Result<T>]) {
    let table = model.table();
    let mut opened = 0u64;
    let mut failed: HashMap<&'static str, u64> = HashMap::new();
    for r in results {
        match r {
            Ok(_) => opened += 1,
            Err(e) => *failed.entry(error_kind_label(e.kind())).or_default() += 1,
        }
    }
    if opened > 0 {
        metrics::counter!(ROWS_OPENED, "table" => table).increment(opened);
    }
    for (kind, n) in failed {
        metrics::counter!(DECRYPT_FAILURES, "table" => table, "kind" => kind).increment(n);
    }
}
