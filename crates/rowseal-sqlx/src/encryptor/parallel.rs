//! The bounded parallel chunk helpers: large batches are split into one
//! contiguous part per thread (at most [`Encryptor::with_threads`] threads,
//! from [`Encryptor::with_parallel_threshold`] rows on), results kept in order.

use super::Encryptor;
use crate::error::{Error, Result};

impl Encryptor {
    /// Runs `f` on contiguous parts of `items` (one per thread for large
    /// inputs) and concatenates the results in order.
    pub(super) fn par_chunks<I: Sync, O: Send>(
        &self,
        items: &[I],
        f: impl Fn(&[I]) -> Result<Vec<O>> + Sync,
    ) -> Result<Vec<O>> {
        if items.len() < self.parallel_threshold || self.threads < 2 {
            return f(items);
        }
        let chunk = items.len().div_ceil(self.threads);
        let f = &f;
        std::thread::scope(|s| {
            let mut parts = items.chunks(chunk);
            let first = parts.next().unwrap_or(&[]);
            let handles: Vec<_> = parts.map(|part| s.spawn(move || f(part))).collect();
            let mut out = f(first)?;
            for h in handles {
                out.extend(h.join().map_err(|_| Error::Worker)??);
            }
            Ok(out)
        })
    }

    /// Maps `f` over `items`, on several threads for large inputs, keeping
    /// order; one result per item.
    pub(super) fn par_map_each<I: Sync, O: Send>(
        &self,
        items: &[I],
        f: impl Fn(&I) -> Result<O> + Sync,
    ) -> Vec<Result<O>> {
        if items.len() < self.parallel_threshold || self.threads < 2 {
            return items.iter().map(&f).collect();
        }
        let chunk = items.len().div_ceil(self.threads);
        let f = &f;
        std::thread::scope(|s| {
            let mut parts = items.chunks(chunk);
            let first = parts.next().unwrap_or(&[]);
            let handles: Vec<_> = parts
                .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<_>>()))
                .collect();
            let mut out: Vec<Result<O>> = first.iter().map(f).collect();
            for h in handles {
                match h.join() {
                    Ok(v) => out.extend(v),
                    Err(_) => out.push(Err(Error::Worker)),
                }
            }
            out
        })
    }

    /// Maps `f` over owned `items`, on several threads for large inputs,
    /// keeping order; one result per item.
    pub(super) fn par_map_owned<I: Send, O: Send>(
        &self,
        items: Vec<I>,
        f: impl Fn(I) -> Result<O> + Sync,
    ) -> Vec<Result<O>> {
        if items.len() < self.parallel_threshold || self.threads < 2 {
            return items.into_iter().map(&f).collect();
        }
        let chunk = items.len().div_ceil(self.threads);
        let mut parts: Vec<Vec<I>> = Vec::with_capacity(self.threads);
        let mut rest = items.into_iter();
        loop {
            let part: Vec<I> = rest.by_ref().take(chunk).collect();
            if part.is_empty() {
                break;
            }
            parts.push(part);
        }
        let f = &f;
        std::thread::scope(|s| {
            let mut parts = parts.into_iter();
            let first = parts.next().unwrap_or_default();
            let handles: Vec<_> = parts
                .map(|part| {
                    let n = part.len();
                    (
                        n,
                        s.spawn(move || part.into_iter().map(f).collect::<Vec<_>>()),
                    )
                })
                .collect();
            let mut out: Vec<Result<O>> = first.into_iter().map(f).collect();
            for (n, h) in handles {
                match h.join() {
                    Ok(v) => out.extend(v),
                    // One result per item, whatever happened to the thread.
                    Err(_) => out.extend((0..n).map(|_| Err(Error::Worker))),
                }
            }
            out
        })
    }
}
