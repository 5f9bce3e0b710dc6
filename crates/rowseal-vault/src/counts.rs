//! Per-operation counts of Transit calls and HTTP requests.

use std::fmt;

use rowseal_core::{OperationCounter, OperationCounts};

/// The Vault API operations the provider calls.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransitOperation {
    /// `POST <mount>/datakey/plaintext/<key>`: a new data key.
    DataKey,
    /// `POST <mount>/decrypt/<key>`: unwrapping a stored data key.
    Decrypt,
    /// `POST <mount>/rewrap/<key>`: a data key rewrapped under the latest
    /// version of its Transit key.
    Rewrap,
    /// `POST <mount>/encrypt/<key>`: a data key wrapped under another Transit
    /// key (moving keys between Transit keys).
    Encrypt,
    /// `GET <mount>/keys/<key>`: checking a key's configuration.
    ReadKey,
    /// `POST auth/<mount>/login`: an AppRole login.
    Login,
    /// `GET sys/health`: the cluster id and seal state.
    Health,
}

impl TransitOperation {
    /// A short name (`"datakey"`, `"decrypt"`, ...), as in the Vault API path.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitOperation::DataKey => "datakey",
            TransitOperation::Decrypt => "decrypt",
            TransitOperation::Rewrap => "rewrap",
            TransitOperation::Encrypt => "encrypt",
            TransitOperation::ReadKey => "read-key",
            TransitOperation::Login => "login",
            TransitOperation::Health => "health",
        }
    }

    const ALL: [TransitOperation; 7] = [
        TransitOperation::DataKey,
        TransitOperation::Decrypt,
        TransitOperation::Rewrap,
        TransitOperation::Encrypt,
        TransitOperation::ReadKey,
        TransitOperation::Login,
        TransitOperation::Health,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TransitOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Calls made by a [`TransitProvider`](crate::TransitProvider) since it was
/// built (including the health check, login and key read of the build
/// itself), by operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransitCallCounts {
    counts: [OperationCounts; 7],
}

impl TransitCallCounts {
    /// The counts of one operation.
    pub fn get(&self, op: TransitOperation) -> OperationCounts {
        self.counts[op.index()]
    }

    /// Calls that use the Transit key (datakey, decrypt, rewrap, encrypt):
    /// what grows with the workload.
    pub fn key_calls(&self) -> u64 {
        [
            TransitOperation::DataKey,
            TransitOperation::Decrypt,
            TransitOperation::Rewrap,
            TransitOperation::Encrypt,
        ]
        .iter()
        .map(|op| self.get(*op).calls)
        .sum()
    }

    /// HTTP requests of every operation.
    pub fn total_requests(&self) -> u64 {
        self.counts.iter().map(|c| c.requests).sum()
    }
}

/// The live counters.
#[derive(Default)]
pub(crate) struct Counters {
    slots: [OperationCounter; 7],
}

impl Counters {
    pub(crate) fn op(&self, op: TransitOperation) -> &OperationCounter {
        &self.slots[op.index()]
    }

    pub(crate) fn snapshot(&self) -> TransitCallCounts {
        let mut out = TransitCallCounts::default();
        for op in TransitOperation::ALL {
            out.counts[op.index()] = self.slots[op.index()].get();
        }
        out
    }
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for op in TransitOperation::ALL {
            let c = self.slots[op.index()].get();
            if c.calls > 0 {
                m.entry(&op.as_str(), &c);
            }
        }
        m.finish()
    }
}
