//! Output: JSON lines on stdout (scripts, logs), or human text with a
//! progress line on stderr (terminals). Never plaintext, never key bytes.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where results go.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// JSON lines instead of text.
    pub json: bool,
}

impl Out {
    /// One JSON event (JSON mode) or a text line (terminal).
    pub fn emit(&self, event: Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{event}");
        } else {
            println!("{}", human());
        }
        let _ = std::io::stdout().flush();
    }

    /// A warning: JSON event, or a line on stderr.
    pub fn warn(&self, message: &str) {
        if self.json {
            println!("{}", json!({"event": "warning", "message": message}));
        } else {
            eprintln!("rowseal: warning: {message}");
        }
    }

    /// The final error of a command.
    pub fn error(&self, code: u8, message: &str) {
        if self.json {
            println!(
                "{}",
                json!({"event": "error", "exit_code": code, "message": message})
            );
        }
        eprintln!("rowseal: error: {message}");
    }
}

/// A job's progress: counts shared by its workers, reported every second.
#[derive(Debug)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    stop: AtomicBool,
    /// Wakes the reporter at once when the job ends: a job must not wait
    /// out the rest of a reporting period (up to a second) to finish.
    wake: tokio::sync::Notify,
    started: Instant,
}

impl Progress {
    /// Starts reporting `label` progress towards `total` rows.
    pub fn start(
        out: Out,
        label: String,
        total: u64,
    ) -> (Arc<Progress>, tokio::task::JoinHandle<()>) {
        let p = Arc::new(Progress {
            done: AtomicU64::new(0),
            total: AtomicU64::new(total),
            stop: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            started: Instant::now(),
        });
        let tty = !out.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let p2 = p.clone();
        let handle = tokio::spawn(async move {
            let period = if tty {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(1)
            };
            loop {
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = p2.wake.notified() => {}
                }
                let stop = p2.stop.load(Ordering::Relaxed);
                p2.report(out, &label, tty, stop);
                if stop {
                    break;
                }
            }
        });
        (p, handle)
    }

    /// Adds finished rows.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Raises the expected total (rows the application added meanwhile).
    pub fn raise_total(&self, total: u64) {
        self.total.fetch_max(total, Ordering::Relaxed);
    }

    /// Rows done.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Rows per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        self.done() as f64 / secs
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Stops reporting (one last report is printed).
    pub async fn finish(&self, handle: tokio::task::JoinHandle<()>) {
        self.stop.store(true, Ordering::Relaxed);
        // A permit is stored if the reporter is not waiting yet.
        self.wake.notify_one();
        let _ = handle.await;
    }

    fn report(&self, out: Out, label: &str, tty: bool, last: bool) {
        let done = self.done();
        let total = self.total.load(Ordering::Relaxed).max(done);
        let rate = self.rate();
        let eta = if rate > 0.0 {
            Some(((total - done) as f64 / rate).ceil() as u64)
        } else {
            None
        };
        if out.json {
            println!(
                "{}",
                json!({"event": "progress", "job": label, "done": done, "total": total,
                       "rows_per_second": rate.round(), "eta_seconds": eta})
            );
            let _ = std::io::stdout().flush();
        } else if tty {
            let pct = if total > 0 {
                100.0 * done as f64 / total as f64
            } else {
                100.0
            };
            let eta = eta.map_or_else(
                || "--:--".to_owned(),
                |s| format!("{}:{:02}", s / 60, s % 60),
            );
            eprint!(
                "\r{label}: [{}] {done}/{total} rows ({pct:.1}%), {:.0} rows/s, ETA {eta}   ",
                bar(pct, 20),
                rate
            );
            if last {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        }
    }
}

/// A text bar `width` characters wide, `pct` percent full.
fn bar(pct: f64, width: usize) -> String {
    let full = ((pct.clamp(0.0, 100.0) / 100.0) * width as f64).round() as usize;
    let full = full.min(width);
    format!("{}{}", "#".repeat(full), "-".repeat(width - full))
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn bar_fills_with_progress() {
        assert_eq!(bar(0.0, 10), "----------");
        assert_eq!(bar(50.0, 10), "#####-----");
        assert_eq!(bar(100.0, 10), "##########");
        assert_eq!(bar(250.0, 4), "####");
        assert_eq!(bar(f64::NAN, 4).len(), 4);
    }
}
