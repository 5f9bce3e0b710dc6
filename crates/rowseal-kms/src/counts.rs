//! Per-operation counts of KMS calls and HTTP requests.

use std::fmt;

use rowseal_core::{OperationCounter, OperationCounts};

/// The KMS API operations the provider calls.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KmsOperation {
    /// `GenerateDataKey`: a new tenant, index or row data key.
    GenerateDataKey,
    /// `Decrypt`: unwrapping a stored data key.
    Decrypt,
    /// `ReEncrypt`: rewrapping a data key under another root key.
    ReEncrypt,
    /// `DescribeKey`: resolving a key id or alias to its ARN.
    DescribeKey,
    /// `Encrypt`: wrapping a data key moved here from another provider.
    Encrypt,
}

impl KmsOperation {
    /// The KMS API name (`"GenerateDataKey"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            KmsOperation::GenerateDataKey => "GenerateDataKey",
            KmsOperation::Decrypt => "Decrypt",
            KmsOperation::ReEncrypt => "ReEncrypt",
            KmsOperation::DescribeKey => "DescribeKey",
            KmsOperation::Encrypt => "Encrypt",
        }
    }

    fn index(self) -> usize {
        match self {
            KmsOperation::GenerateDataKey => 0,
            KmsOperation::Decrypt => 1,
            KmsOperation::ReEncrypt => 2,
            KmsOperation::DescribeKey => 3,
            KmsOperation::Encrypt => 4,
        }
    }
}

impl fmt::Display for KmsOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// KMS calls made by an [`AwsKmsProvider`](crate::AwsKmsProvider) since it was
/// built (including the `DescribeKey` of the build itself), by operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KmsCallCounts {
    /// `GenerateDataKey`.
    pub generate_data_key: OperationCounts,
    /// `Decrypt`.
    pub decrypt: OperationCounts,
    /// `ReEncrypt`.
    pub reencrypt: OperationCounts,
    /// `DescribeKey`.
    pub describe_key: OperationCounts,
    /// `Encrypt`.
    pub encrypt: OperationCounts,
}

impl KmsCallCounts {
    /// The counts of one operation.
    pub fn get(&self, op: KmsOperation) -> OperationCounts {
        match op {
            KmsOperation::GenerateDataKey => self.generate_data_key,
            KmsOperation::Decrypt => self.decrypt,
            KmsOperation::ReEncrypt => self.reencrypt,
            KmsOperation::DescribeKey => self.describe_key,
            KmsOperation::Encrypt => self.encrypt,
        }
    }

    fn all(&self) -> [OperationCounts; 5] {
        [
            self.generate_data_key,
            self.decrypt,
            self.reencrypt,
            self.describe_key,
            self.encrypt,
        ]
    }

    /// Calls of every operation.
    pub fn total_calls(&self) -> u64 {
        self.all().iter().map(|c| c.calls).sum()
    }

    /// HTTP requests of every operation (what KMS bills and throttles).
    pub fn total_requests(&self) -> u64 {
        self.all().iter().map(|c| c.requests).sum()
    }
}

/// The live counters.
#[derive(Default)]
pub(crate) struct Counters {
    slots: [OperationCounter; 5],
}

impl Counters {
    pub(crate) fn call(&self, op: KmsOperation) {
        self.slots[op.index()].call();
    }

    pub(crate) fn request(&self, op: KmsOperation) {
        self.slots[op.index()].request();
    }

    pub(crate) fn failure(&self, op: KmsOperation) {
        self.slots[op.index()].failure();
    }

    fn get(&self, op: KmsOperation) -> OperationCounts {
        self.slots[op.index()].get()
    }

    pub(crate) fn snapshot(&self) -> KmsCallCounts {
        KmsCallCounts {
            generate_data_key: self.get(KmsOperation::GenerateDataKey),
            decrypt: self.get(KmsOperation::Decrypt),
            reencrypt: self.get(KmsOperation::ReEncrypt),
            describe_key: self.get(KmsOperation::DescribeKey),
            encrypt: self.get(KmsOperation::Encrypt),
        }
    }
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), f)
    }
}
