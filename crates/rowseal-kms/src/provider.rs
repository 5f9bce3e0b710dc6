//! [`AwsKmsProvider`]: the [`KeyProvider`] on AWS KMS.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyState, KeyUsageType};
use aws_sdk_kms::Client;
use rowseal_core::{
    DataKey, EncryptionContext, KeyProvider, ProviderError, ProviderErrorKind, Result, SecretKey,
    WrappedKey,
};
use zeroize::Zeroizing;

use crate::arn;
use crate::counts::{Counters, KmsCallCounts, KmsOperation};
use crate::error::{classify, AwsKmsError, Failure};
use crate::AUDIT_TARGET;
use rowseal_core::RetryPolicy;

/// A KMS client and the region it serves.
pub(crate) struct RegionClient {
    pub(crate) region: String,
    pub(crate) client: Client,
}

/// Root keys in AWS KMS (or a KMS-compatible server).
///
/// Build one with [`AwsKmsProvider::builder`]. Cheap to share: put it in an
/// `Arc` and hand it to [`KeyHierarchy`](rowseal_core::KeyHierarchy).
///
/// - [`current_key_id`](KeyProvider::current_key_id) is the key ARN the
///   configured id or alias resolved to when the provider was built; new data
///   keys are generated under it. Re-pointing an alias takes effect for new
///   keys when the provider is next built; old data keeps decrypting under the
///   ARN recorded with it.
/// - `decrypt_data_key` sends `KeyId` = the ARN recorded in the
///   [`WrappedKey`], and checks that KMS answered for that key.
/// - `reencrypt_data_key` pins `SourceKeyId` the same way; the destination id
///   or alias is resolved to its ARN once (then cached for the provider's
///   life, so that a long rewrap job targets one key even if an alias moves
///   meanwhile), and that ARN is recorded in the result.
/// - **The database never chooses the KMS key.** The ARN recorded in a
///   [`WrappedKey`] comes from the database, so both refuse, before any
///   request to KMS, a wrapped key whose ARN is not on the provider's
///   [allow-list](Self::allowed_keys) (the configured key and the keys added
///   with [`allow_key`](crate::AwsKmsProviderBuilder::allow_key); a
///   multi-Region key also allows its replicas), with
///   [`ProviderErrorKind::KeyNotAllowed`] and a `WARN` audit event. A rewrap
///   *destination* is chosen by the operator, not read from the database, so
///   it need not be on the list; but the providers that read the rewrapped
///   keys afterwards must have it on theirs.
pub struct AwsKmsProvider {
    configured_key: String,
    key_arn: String,
    allowed_keys: Vec<String>,
    grant_tokens: Option<Vec<String>>,
    primary: RegionClient,
    replicas: Vec<RegionClient>,
    retry: RetryPolicy,
    operation_timeout: Duration,
    counters: Counters,
    resolved: Mutex<HashMap<String, String>>,
}

/// What one call is about, for the audit event.
struct Call<'a> {
    op: KmsOperation,
    key: &'a str,
    destination: Option<&'a str>,
    context: &'a EncryptionContext,
}

impl AwsKmsProvider {
    /// Resolves the configured key, and makes the allow-list: its ARN first,
    /// then `allowed_keys` (key ARNs, checked by the builder) in order,
    /// without duplicates.
    pub(crate) async fn connect(
        configured_key: String,
        allowed_keys: Vec<String>,
        grant_tokens: Vec<String>,
        primary: RegionClient,
        replicas: Vec<RegionClient>,
        retry: RetryPolicy,
        operation_timeout: Duration,
    ) -> Result<Self> {
        let mut provider = AwsKmsProvider {
            key_arn: String::new(),
            allowed_keys: Vec::new(),
            grant_tokens: (!grant_tokens.is_empty()).then_some(grant_tokens),
            configured_key,
            primary,
            replicas,
            retry,
            operation_timeout,
            counters: Counters::default(),
            resolved: Mutex::new(HashMap::new()),
        };
        let arn = provider
            .describe(&provider.primary, &provider.configured_key)
            .await?;
        let mut allowed = Vec::with_capacity(allowed_keys.len() + 1);
        for key in std::iter::once(arn.clone()).chain(allowed_keys) {
            if !allowed.contains(&key) {
                allowed.push(key);
            }
        }
        provider.key_arn = arn;
        provider.allowed_keys = allowed;
        tracing::info!(
            target: AUDIT_TARGET,
            key = %provider.configured_key,
            key_arn = %provider.key_arn,
            region = %provider.primary.region,
            replicas = ?provider.replica_regions().collect::<Vec<_>>(),
            allowed_keys = ?provider.allowed_keys,
            "KMS key provider ready"
        );
        Ok(provider)
    }

    /// The key id, ARN or alias as configured.
    pub fn configured_key_id(&self) -> &str {
        &self.configured_key
    }

    /// The ARN of the key new data keys are generated under (the same as
    /// [`KeyProvider::current_key_id`]).
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }

    /// The allow-list: the KMS key ARNs whose wrapped keys this provider
    /// unwraps and rewraps from. The configured key's ARN comes first, then
    /// the keys added with
    /// [`allow_key`](crate::AwsKmsProviderBuilder::allow_key), in order. A
    /// multi-Region key on the list also allows its replicas in other
    /// regions, which are not listed.
    pub fn allowed_keys(&self) -> &[String] {
        &self.allowed_keys
    }

    /// The region of the key.
    pub fn region(&self) -> &str {
        &self.primary.region
    }

    /// The fallback regions for multi-Region keys, in order.
    pub fn replica_regions(&self) -> impl Iterator<Item = &str> {
        self.replicas.iter().map(|r| r.region.as_str())
    }

    /// KMS calls and HTTP requests so far, by operation.
    pub fn call_counts(&self) -> KmsCallCounts {
        self.counters.snapshot()
    }

    /// The primary KMS client (retries disabled, timeouts set by the
    /// provider), for administrative calls of your own.
    pub fn client(&self) -> &Client {
        &self.primary.client
    }

    fn all_clients(&self) -> impl Iterator<Item = &RegionClient> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }

    /// Whether the key ARN `arn` is on the allow-list (itself, or as a replica
    /// of an allowed multi-Region key).
    fn is_allowed(&self, arn: &str) -> bool {
        self.allowed_keys.iter().any(|a| arn::allows(a, arn))
    }

    /// Refuses a wrapped key whose key is not on the allow-list, before any
    /// request: a security event, audited as such.
    fn check_allowed(
        &self,
        op: KmsOperation,
        arn: &str,
        context: &EncryptionContext,
    ) -> Result<(), ProviderError> {
        if self.is_allowed(arn) {
            return Ok(());
        }
        tracing::warn!(
            target: AUDIT_TARGET,
            operation = op.as_str(),
            key_arn = %arn,
            encryption_context = %context,
            allowed_keys = ?self.allowed_keys,
            outcome = "KeyNotAllowed",
            "KMS call refused: the wrapped key names a KMS key that is not on the allow-list"
        );
        Err(ProviderError::new(
            ProviderErrorKind::KeyNotAllowed,
            "the wrapped key names a KMS key that is not on this provider's allow-list (the \
             configured key and the keys allowed with allow_key, or the rowseal tool's \
             --kms-allow-key); nothing was sent to KMS",
        )
        .with_key_id(arn))
    }

    /// The client serving `arn`'s region, or the primary one.
    fn home(&self, arn: &str) -> &RegionClient {
        arn::region(arn)
            .and_then(|r| self.all_clients().find(|c| c.region == r))
            .unwrap_or(&self.primary)
    }

    /// `DescribeKey`: the ARN of `key_id`, which must be an enabled symmetric
    /// encryption key.
    async fn describe(&self, rc: &RegionClient, key_id: &str) -> Result<String, ProviderError> {
        let no_context = EncryptionContext::default();
        let call = Call {
            op: KmsOperation::DescribeKey,
            key: key_id,
            destination: None,
            context: &no_context,
        };
        let out = self
            .send(&call, rc, |c| {
                c.describe_key()
                    .key_id(key_id)
                    .set_grant_tokens(self.grant_tokens.clone())
                    .send()
            })
            .await?;
        let bad = |kind, msg: String| Err(ProviderError::new(kind, msg).with_key_id(key_id));
        let Some(meta) = out.key_metadata() else {
            return bad(
                ProviderErrorKind::Other,
                "DescribeKey returned no key metadata".into(),
            );
        };
        let arn = match meta.arn() {
            Some(a) if !a.is_empty() => a.to_owned(),
            _ => {
                return bad(
                    ProviderErrorKind::Other,
                    "DescribeKey returned no key ARN".into(),
                )
            }
        };
        let bad = |kind, msg: String| Err(ProviderError::new(kind, msg).with_key_id(arn.clone()));
        match meta.key_state() {
            Some(KeyState::Enabled) | None => {}
            Some(state) => {
                return bad(
                    ProviderErrorKind::KeyDisabled,
                    format!("key state is {}", state.as_str()),
                )
            }
        }
        if meta
            .key_usage()
            .is_some_and(|u| *u != KeyUsageType::EncryptDecrypt)
        {
            return bad(
                ProviderErrorKind::Config,
                "not an ENCRYPT_DECRYPT key".into(),
            );
        }
        if meta
            .key_spec()
            .is_some_and(|s| *s != KeySpec::SymmetricDefault)
        {
            return bad(
                ProviderErrorKind::Config,
                "not a symmetric (SYMMETRIC_DEFAULT) key".into(),
            );
        }
        Ok(arn)
    }

    /// The ARN of a `ReEncrypt` destination, resolved once.
    async fn resolve_destination(
        &self,
        rc: &RegionClient,
        key_id: &str,
    ) -> Result<String, ProviderError> {
        if key_id == self.key_arn || key_id == self.configured_key {
            return Ok(self.key_arn.clone());
        }
        let cache_key = format!("{}\n{key_id}", rc.region);
        if let Some(arn) = self.lock_resolved().get(&cache_key) {
            return Ok(arn.clone());
        }
        let arn = self.describe(rc, key_id).await?;
        self.lock_resolved().insert(cache_key, arn.clone());
        Ok(arn)
    }

    fn lock_resolved(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.resolved.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One call in one region: attempts with backoff until success, a final
    /// error, `max_attempts` or the operation timeout; counted and audited.
    async fn send<T, E, F, Fut>(
        &self,
        call: &Call<'_>,
        rc: &RegionClient,
        request: F,
    ) -> Result<T, ProviderError>
    where
        F: Fn(&Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, SdkError<E>>>,
        T: RequestId,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let op = call.op;
        self.counters.call(op);
        let started = Instant::now();
        let deadline = started + self.operation_timeout;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            self.counters.request(op);
            let remaining = deadline.saturating_duration_since(Instant::now());
            let failure = match tokio::time::timeout(remaining, request(&rc.client)).await {
                Ok(Ok(out)) => {
                    tracing::info!(
                        target: AUDIT_TARGET,
                        operation = op.as_str(),
                        key_arn = %call.key,
                        destination_key = call.destination.unwrap_or(""),
                        region = %rc.region,
                        encryption_context = %call.context,
                        request_id = out.request_id().unwrap_or(""),
                        attempts = attempt,
                        elapsed_ms = elapsed_ms(started),
                        outcome = "ok",
                        "KMS call"
                    );
                    return Ok(out);
                }
                Ok(Err(e)) => classify(&e),
                Err(_) => Failure {
                    kind: ProviderErrorKind::Timeout,
                    code: None,
                    message: format!(
                        "no answer within the operation timeout of {:?}",
                        self.operation_timeout
                    ),
                    http_status: None,
                    request_id: None,
                },
            };
            if failure.kind.is_retryable() && attempt < self.retry.max_attempts {
                let pause = self.retry.backoff(attempt);
                if Instant::now() + pause < deadline {
                    tracing::debug!(
                        target: AUDIT_TARGET,
                        operation = op.as_str(),
                        key_arn = %call.key,
                        region = %rc.region,
                        request_id = failure.request_id.as_deref().unwrap_or(""),
                        error_code = failure.code.as_deref().unwrap_or(""),
                        attempt,
                        backoff_ms = pause.as_millis() as u64,
                        "KMS attempt failed, retrying"
                    );
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
            self.counters.failure(op);
            tracing::warn!(
                target: AUDIT_TARGET,
                operation = op.as_str(),
                key_arn = %call.key,
                destination_key = call.destination.unwrap_or(""),
                region = %rc.region,
                encryption_context = %call.context,
                request_id = failure.request_id.as_deref().unwrap_or(""),
                attempts = attempt,
                elapsed_ms = elapsed_ms(started),
                outcome = ?failure.kind,
                error_code = failure.code.as_deref().unwrap_or(""),
                error = %failure.message,
                "KMS call failed"
            );
            let detail = AwsKmsError {
                operation: op,
                region: rc.region.clone(),
                code: failure.code,
                message: failure.message,
                http_status: failure.http_status,
                request_id: failure.request_id,
                attempts: attempt,
            };
            return Err(ProviderError::new(failure.kind, detail.to_string())
                .with_key_id(call.key)
                .with_source(detail));
        }
    }

    async fn decrypt_in(
        &self,
        rc: &RegionClient,
        arn: &str,
        ciphertext: &[u8],
        context: &EncryptionContext,
    ) -> Result<SecretKey, ProviderError> {
        let map = context_map(context);
        let call = Call {
            op: KmsOperation::Decrypt,
            key: arn,
            destination: None,
            context,
        };
        let mut out = self
            .send(&call, rc, |c| {
                c.decrypt()
                    .key_id(arn)
                    .set_grant_tokens(self.grant_tokens.clone())
                    .ciphertext_blob(Blob::new(ciphertext))
                    .set_encryption_context(Some(map.clone()))
                    .send()
            })
            .await?;
        let plaintext = out.plaintext.take().map(|b| Zeroizing::new(b.into_inner()));
        let invalid = |msg: &str| {
            ProviderError::new(ProviderErrorKind::InvalidCiphertext, msg).with_key_id(arn)
        };
        if out.key_id().is_some_and(|k| k != arn) {
            // The key id was pinned: KMS must not have used another key.
            return Err(invalid(
                "KMS decrypted with another key than the one pinned",
            ));
        }
        plaintext
            .and_then(|p| SecretKey::try_from_slice(&p))
            .ok_or_else(|| invalid("Decrypt did not return a 32-byte data key"))
    }
}

/// Whether `Decrypt` may move on to the next region after `kind`.
fn falls_back(kind: ProviderErrorKind) -> bool {
    matches!(
        kind,
        ProviderErrorKind::Unavailable
            | ProviderErrorKind::Timeout
            | ProviderErrorKind::Throttled
            | ProviderErrorKind::KeyNotFound
    )
}

fn context_map(context: &EncryptionContext) -> HashMap<String, String> {
    context
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis().min(u64::MAX as u128) as u64
}

fn not_kms(key_id: &str) -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::KeyNotFound,
        "the wrapped key does not name a KMS key ARN",
    )
    .with_key_id(key_id)
}

#[async_trait]
impl KeyProvider for AwsKmsProvider {
    fn name(&self) -> &'static str {
        "aws-kms"
    }

    fn current_key_id(&self) -> &str {
        &self.key_arn
    }

    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey> {
        let arn = self.key_arn.as_str();
        let map = context_map(context);
        let call = Call {
            op: KmsOperation::GenerateDataKey,
            key: arn,
            destination: None,
            context,
        };
        let mut out = self
            .send(&call, &self.primary, |c| {
                c.generate_data_key()
                    .key_id(arn)
                    .set_grant_tokens(self.grant_tokens.clone())
                    .key_spec(DataKeySpec::Aes256)
                    .set_encryption_context(Some(map.clone()))
                    .send()
            })
            .await?;
        let plaintext = out.plaintext.take().map(|b| Zeroizing::new(b.into_inner()));
        let other = |msg: &str| ProviderError::new(ProviderErrorKind::Other, msg).with_key_id(arn);
        if out.key_id().is_some_and(|k| k != arn) {
            return Err(other("GenerateDataKey used another key than the one configured").into());
        }
        let plaintext = plaintext
            .and_then(|p| SecretKey::try_from_slice(&p))
            .ok_or_else(|| other("GenerateDataKey did not return a 32-byte data key"))?;
        let blob = out
            .ciphertext_blob
            .take()
            .map(Blob::into_inner)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| other("GenerateDataKey returned no ciphertext"))?;
        Ok(DataKey {
            plaintext,
            wrapped: WrappedKey::new(arn, blob)?,
        })
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<SecretKey> {
        let arn = wrapped.key_id();
        if arn::region(arn).is_none() {
            return Err(not_kms(arn).into());
        }
        self.check_allowed(KmsOperation::Decrypt, arn, context)?;
        let home = self.home(arn);
        let first = self
            .decrypt_in(home, arn, wrapped.ciphertext(), context)
            .await;
        let mut err = match first {
            Ok(key) => return Ok(key),
            Err(e) => e,
        };
        if !arn::is_multi_region(arn) {
            return Err(err.into());
        }
        for rc in self.all_clients().filter(|c| c.region != home.region) {
            if !falls_back(err.kind()) {
                break;
            }
            let Some(replica_arn) = arn::in_region(arn, &rc.region) else {
                break;
            };
            if !self.is_allowed(&replica_arn) {
                // Not reachable while `arn` is allowed (an allowed mrk allows
                // its replicas), but never ask for a key off the list.
                continue;
            }
            tracing::warn!(
                target: AUDIT_TARGET,
                key_arn = %arn,
                failed_region = %home.region,
                error = %err,
                next_region = %rc.region,
                "KMS Decrypt falling back to a multi-Region replica"
            );
            match self
                .decrypt_in(rc, &replica_arn, wrapped.ciphertext(), context)
                .await
            {
                Ok(key) => return Ok(key),
                Err(e) => err = e,
            }
        }
        Err(err.into())
    }

    async fn reencrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
        destination_key_id: &str,
    ) -> Result<WrappedKey> {
        let source = wrapped.key_id();
        if arn::region(source).is_none() {
            return Err(not_kms(source).into());
        }
        // The source comes from the database: it must be allowed. The
        // destination is the operator's choice, so it need not be.
        self.check_allowed(KmsOperation::ReEncrypt, source, context)?;
        let rc = self.home(source);
        let destination = self.resolve_destination(rc, destination_key_id).await?;
        let map = context_map(context);
        let call = Call {
            op: KmsOperation::ReEncrypt,
            key: source,
            destination: Some(&destination),
            context,
        };
        let mut out = self
            .send(&call, rc, |c| {
                c.re_encrypt()
                    .set_grant_tokens(self.grant_tokens.clone())
                    .ciphertext_blob(Blob::new(wrapped.ciphertext()))
                    .source_key_id(source)
                    .set_source_encryption_context(Some(map.clone()))
                    .destination_key_id(&destination)
                    .set_destination_encryption_context(Some(map.clone()))
                    .send()
            })
            .await?;
        if out.source_key_id().is_some_and(|k| k != source) {
            return Err(ProviderError::new(
                ProviderErrorKind::InvalidCiphertext,
                "KMS decrypted with another key than the one pinned",
            )
            .with_key_id(source)
            .into());
        }
        let other = |msg: &str| {
            ProviderError::new(ProviderErrorKind::Other, msg).with_key_id(destination.clone())
        };
        if out.key_id().is_some_and(|k| k != destination) {
            return Err(other("ReEncrypt used another destination key than requested").into());
        }
        let blob = out
            .ciphertext_blob
            .take()
            .map(Blob::into_inner)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| other("ReEncrypt returned no ciphertext"))?;
        WrappedKey::new(destination, blob)
    }

    fn allows_key(&self, key_id: &str) -> bool {
        self.is_allowed(key_id)
    }

    async fn wrap_data_key(
        &self,
        key: &SecretKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let arn = self.key_arn.as_str();
        let map = context_map(context);
        let call = Call {
            op: KmsOperation::Encrypt,
            key: arn,
            destination: None,
            context,
        };
        let mut out = self
            .send(&call, &self.primary, |c| {
                c.encrypt()
                    .key_id(arn)
                    .set_grant_tokens(self.grant_tokens.clone())
                    .plaintext(Blob::new(key.expose_secret().to_vec()))
                    .set_encryption_context(Some(map.clone()))
                    .send()
            })
            .await?;
        let other = |msg: &str| ProviderError::new(ProviderErrorKind::Other, msg).with_key_id(arn);
        if out.key_id().is_some_and(|k| k != arn) {
            return Err(other("Encrypt used another key than the one configured").into());
        }
        let blob = out
            .ciphertext_blob
            .take()
            .map(Blob::into_inner)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| other("Encrypt returned no ciphertext"))?;
        WrappedKey::new(arn, blob)
    }
}

impl fmt::Debug for AwsKmsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsProvider")
            .field("key", &self.configured_key)
            .field("key_arn", &self.key_arn)
            .field("allowed_keys", &self.allowed_keys)
            .field(
                "grant_tokens",
                &self.grant_tokens.as_ref().map_or(0, Vec::len),
            )
            .field("region", &self.primary.region)
            .field(
                "replica_regions",
                &self.replica_regions().collect::<Vec<_>>(),
            )
            .field("retry", &self.retry)
            .field("operation_timeout", &self.operation_timeout)
            .field("calls", &self.counters)
            .finish()
    }
}
