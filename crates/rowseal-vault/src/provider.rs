//! [`TransitProvider`]: the [`KeyProvider`] on Vault's (or OpenBao's) Transit
//! secrets engine.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hyper::Method;
use rowseal_core::{
    DataKey, EncryptionContext, KeyProvider, OperationCounter, ProviderError, ProviderErrorKind,
    Result, RetryPolicy, SecretKey, WrappedKey,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::auth::{Session, TransitAuth};
use crate::counts::{Counters, TransitCallCounts, TransitOperation};
use crate::error::{classify, Failure, TransitError};
use crate::http::Http;
use crate::AUDIT_TARGET;

/// The prefix of the root-key ids this provider records.
pub(crate) const KEY_ID_PREFIX: &str = "vault-transit:";

/// The key types whose datakey, decrypt, rewrap and encrypt this provider
/// uses (symmetric AEAD keys that support derivation).
const KEY_TYPES: [&str; 3] = ["aes256-gcm96", "chacha20-poly1305", "aes128-gcm96"];

/// Root keys in Vault's or OpenBao's Transit secrets engine.
///
/// Build one with [`TransitProvider::builder`]. Cheap to share: put it in an
/// `Arc` and hand it to [`KeyHierarchy`](rowseal_core::KeyHierarchy).
///
/// - **Data keys** come from `datakey/plaintext/<key>` (256 bits); a stored key
///   is unwrapped with `decrypt/<key>`, and rewrapped under the latest version
///   of its Transit key with `rewrap/<key>` after a Transit key rotation (the
///   plaintext never leaves Vault). Rewrapping under *another* Transit key on
///   the same server decrypts and encrypts (`encrypt/<key>`): the data key is
///   in this process's memory for that moment, zeroized after.
/// - **The encryption context is bound by key derivation.** The Transit key
///   must be created with `derived=true`; every call sends rowseal's context
///   (canonical bytes, base64) as Transit's `context`, from which Vault derives
///   the key that wraps this data key (HKDF-SHA256). A wrapped key therefore
///   decrypts only under the context it was made for, on every endpoint the
///   provider uses: Transit's `associated_data` would bind it too, but
///   `datakey` and `rewrap` do not accept it. A key that is not derived would
///   silently ignore the context, so the provider refuses to start on one.
/// - **Key ids** are `vault-transit:<cluster id>:<namespace>:<mount>:<key>`:
///   the cluster id comes from `sys/health` when the provider is built, so
///   the id names one key on one Vault cluster whatever address reaches it.
///   The database never chooses the key: a wrapped key whose id is not on the
///   allow-list (the configured key and [`allow_key`](crate::TransitProviderBuilder::allow_key))
///   is refused before any request, with
///   [`ProviderErrorKind::KeyNotAllowed`].
/// - **Errors**: 403 is `AccessDenied` (a revoked policy, a wrong namespace),
///   503 "sealed" is `Sealed`, 429 is `Throttled`, 5xx and connection errors
///   are `Unavailable`, a refused ciphertext or context is
///   `InvalidCiphertext`, an unknown key is `KeyNotFound`. Throttling,
///   sealing and outages are retried with the same [`RetryPolicy`] as the AWS
///   provider, within the operation timeout; the rest are final.
/// - **Counting and audit**: every call is counted per operation
///   ([`call_counts`](Self::call_counts)) and logged on [`AUDIT_TARGET`]
///   with the operation, key id, namespace, encryption context and outcome;
///   never a token, a data key or a ciphertext.
pub struct TransitProvider {
    pub(crate) http: Http,
    pub(crate) auth: TransitAuth,
    pub(crate) session: Mutex<Session>,
    pub(crate) login: tokio::sync::Mutex<()>,
    pub(crate) namespace: Option<String>,
    pub(crate) mount: String,
    pub(crate) key_name: String,
    pub(crate) key_id: String,
    pub(crate) cluster_id: String,
    /// (key id, Transit key name), the configured key first.
    pub(crate) allowed: Vec<(String, String)>,
    /// Rewrap destinations already checked: key name -> key id.
    pub(crate) destinations: Mutex<HashMap<String, String>>,
    pub(crate) retry: RetryPolicy,
    pub(crate) attempt_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) counters: Counters,
}

/// The `data` of a Vault answer.
#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Deserialize)]
struct DataKeyOut {
    ciphertext: String,
    plaintext: Zeroizing<String>,
}

#[derive(Deserialize)]
struct DecryptOut {
    plaintext: Zeroizing<String>,
}

#[derive(Deserialize)]
struct CiphertextOut {
    ciphertext: String,
}

/// What the provider checks of a Transit key.
#[derive(Deserialize)]
pub(crate) struct KeyConfig {
    #[serde(default)]
    derived: bool,
    #[serde(rename = "type")]
    key_type: String,
    #[serde(default)]
    supports_encryption: bool,
    #[serde(default)]
    supports_decryption: bool,
}

#[derive(Deserialize)]
pub(crate) struct Health {
    #[serde(default)]
    pub(crate) sealed: bool,
    #[serde(default)]
    pub(crate) cluster_id: Option<String>,
}

#[derive(Deserialize)]
struct Login {
    auth: LoginAuth,
}

#[derive(Deserialize)]
struct LoginAuth {
    client_token: Zeroizing<String>,
    #[serde(default)]
    lease_duration: u64,
}

/// An error answer: Vault's messages, or (sys/health) the seal state.
#[derive(Deserialize)]
struct Errors {
    #[serde(default)]
    errors: Vec<String>,
    #[serde(default)]
    sealed: bool,
}

#[derive(Serialize)]
struct LoginIn<'a> {
    role_id: &'a str,
    secret_id: &'a str,
}

/// The body of datakey, decrypt, rewrap and encrypt.
#[derive(Serialize, Default)]
struct KeyIn<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<&'a str>,
    context: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bits: Option<u32>,
}

/// What one call is about, for the audit event and the error.
struct Call<'a> {
    op: TransitOperation,
    key: &'a str,
    context: &'a EncryptionContext,
}

/// A request body, serialized straight into a buffer that is zeroized on
/// drop: bodies carry a data key (encrypt) or a secret id (login). The
/// buffer is reserved up front so that it never reallocates (a reallocation
/// would leave a copy behind).
fn json_body(value: &impl Serialize) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(8192));
    // Serializing plain string fields into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, value);
    buf
}

fn context_b64(context: &EncryptionContext) -> String {
    B64.encode(context.canonical_bytes())
}

pub(crate) fn key_id_of(cluster: &str, namespace: Option<&str>, mount: &str, name: &str) -> String {
    format!(
        "{KEY_ID_PREFIX}{cluster}:{}:{mount}:{name}",
        namespace.unwrap_or("")
    )
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis().min(u64::MAX as u128) as u64
}

fn parse<T: DeserializeOwned>(
    body: &[u8],
    op: TransitOperation,
    key: &str,
) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde_json's message names a position and what it expected, never
        // the input.
        ProviderError::new(
            ProviderErrorKind::Other,
            format!("Vault Transit {op}: unexpected answer: {e}"),
        )
        .with_key_id(key)
    })
}

fn decode_key(b64: &str, op: TransitOperation, key: &str) -> Result<SecretKey, ProviderError> {
    let bytes = Zeroizing::new(B64.decode(b64.as_bytes()).unwrap_or_default());
    SecretKey::try_from_slice(&bytes).ok_or_else(|| {
        ProviderError::new(
            ProviderErrorKind::Other,
            format!("Vault Transit {op} did not return a 32-byte data key"),
        )
        .with_key_id(key)
    })
}

impl TransitProvider {
    /// Starts configuring a provider for the Transit key `key` (its name) on
    /// the server at `address`.
    pub fn builder(
        address: impl Into<String>,
        key: impl Into<String>,
    ) -> crate::TransitProviderBuilder {
        crate::TransitProviderBuilder::new(address.into(), key.into())
    }

    /// The id recorded in new wrapped keys (the same as
    /// [`KeyProvider::current_key_id`]).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The Transit key's name.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The Transit mount (default `transit`).
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// The Vault namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The Vault cluster id the key ids name.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The server address, as configured.
    pub fn address(&self) -> &str {
        self.http.base()
    }

    /// The allow-list: the key ids whose wrapped keys this provider unwraps
    /// and rewraps, the configured key first.
    pub fn allowed_keys(&self) -> impl Iterator<Item = &str> {
        self.allowed.iter().map(|(id, _)| id.as_str())
    }

    /// Calls and HTTP requests so far, by operation.
    pub fn call_counts(&self) -> TransitCallCounts {
        self.counters.snapshot()
    }

    /// The Transit key name behind an allowed key id, or the refusal.
    fn allowed_name(
        &self,
        op: TransitOperation,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<&str, ProviderError> {
        if let Some((_, name)) = self.allowed.iter().find(|(id, _)| id == key_id) {
            return Ok(name);
        }
        tracing::warn!(
            target: AUDIT_TARGET,
            operation = op.as_str(),
            key_id = %key_id,
            encryption_context = %context,
            allowed_keys = ?self.allowed.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            outcome = "KeyNotAllowed",
            "Transit call refused: the wrapped key names a key that is not on the allow-list"
        );
        Err(ProviderError::new(
            ProviderErrorKind::KeyNotAllowed,
            "the wrapped key names a root key that is not on this Transit provider's \
             allow-list (the configured key and the keys allowed with allow_key); nothing \
             was sent to Vault",
        )
        .with_key_id(key_id))
    }

    fn session_may_relogin(&self) -> bool {
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .may_relogin_after_refusal()
    }

    fn token(&self) -> (Zeroizing<String>, u64, bool) {
        let s = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        (s.token.clone(), s.generation, s.needs_renewal())
    }

    /// Logs in (AppRole) unless another task has since `seen_generation`.
    pub(crate) async fn relogin(&self, seen_generation: u64) -> Result<(), ProviderError> {
        let TransitAuth::AppRole {
            mount,
            role_id,
            secret_id,
        } = &self.auth
        else {
            return Ok(());
        };
        let _one_login = self.login.lock().await;
        if self.token().1 != seen_generation {
            return Ok(());
        }
        let body = json_body(&LoginIn {
            role_id,
            secret_id: secret_id.as_str(),
        });
        let path = format!("auth/{mount}/login");
        let no_context = EncryptionContext::default();
        let call = Call {
            op: TransitOperation::Login,
            key: "",
            context: &no_context,
        };
        let answer = self
            .attempts(&call, Method::POST, &path, None, Some(body))
            .await?;
        let login: Login = parse(&answer, TransitOperation::Login, "")?;
        let lease = Duration::from_secs(login.auth.lease_duration);
        let mut s = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        *s = Session::from_login(login.auth.client_token, lease, seen_generation + 1);
        Ok(())
    }

    /// One authenticated call: logs in again first if the AppRole token is
    /// due, and once more if Vault refuses a token older than
    /// [`MIN_RELOGIN_AGE`](crate::auth::MIN_RELOGIN_AGE) (it may have expired
    /// or been revoked) before the refusal stands.
    async fn call(
        &self,
        call: &Call<'_>,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        let (_, generation, due) = self.token();
        if due {
            self.relogin(generation).await?;
        }
        let (token, generation, _) = self.token();
        let first = self
            .attempts(call, method.clone(), path, Some(&token), body.clone())
            .await;
        match first {
            Err(e)
                if e.kind() == ProviderErrorKind::AccessDenied
                    && matches!(self.auth, TransitAuth::AppRole { .. })
                    && self.session_may_relogin() =>
            {
                self.relogin(generation).await?;
                let (token, _, _) = self.token();
                self.attempts(call, method, path, Some(&token), body).await
            }
            other => other,
        }
    }

    /// One call: attempts with backoff until success, a final error,
    /// `max_attempts` or the operation timeout; counted and audited.
    async fn attempts(
        &self,
        call: &Call<'_>,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        let op = call.op;
        let counter: &OperationCounter = self.counters.op(op);
        counter.call();
        let started = Instant::now();
        let deadline = started + self.operation_timeout;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            counter.request();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let limit = remaining.min(self.attempt_timeout);
            let sent = tokio::time::timeout(
                limit,
                self.http.send(method.clone(), path, token, body.clone()),
            )
            .await;
            let failure = match sent {
                Ok(Ok(answer)) if answer.status.is_success() => {
                    tracing::info!(
                        target: AUDIT_TARGET,
                        operation = op.as_str(),
                        key_id = %call.key,
                        namespace = self.namespace.as_deref().unwrap_or(""),
                        encryption_context = %call.context,
                        attempts = attempt,
                        elapsed_ms = elapsed_ms(started),
                        outcome = "ok",
                        "Transit call"
                    );
                    return Ok(answer.body);
                }
                Ok(Ok(answer)) => {
                    let errors = match serde_json::from_slice::<Errors>(&answer.body) {
                        Ok(e) if e.errors.is_empty() && e.sealed => vec!["Vault is sealed".into()],
                        Ok(e) => e.errors,
                        Err(_) => Vec::new(),
                    };
                    classify(op, answer.status.as_u16(), &errors)
                }
                Ok(Err(f)) => f,
                Err(_) => Failure::new(
                    ProviderErrorKind::Timeout,
                    format!("no answer within {limit:?}"),
                ),
            };
            if failure.kind.is_retryable() && attempt < self.retry.max_attempts {
                let pause = self.retry.backoff(attempt);
                if Instant::now() + pause < deadline {
                    tracing::debug!(
                        target: AUDIT_TARGET,
                        operation = op.as_str(),
                        key_id = %call.key,
                        attempt,
                        error = %failure.message,
                        backoff_ms = pause.as_millis() as u64,
                        "Transit attempt failed, retrying"
                    );
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
            counter.failure();
            tracing::warn!(
                target: AUDIT_TARGET,
                operation = op.as_str(),
                key_id = %call.key,
                namespace = self.namespace.as_deref().unwrap_or(""),
                encryption_context = %call.context,
                attempts = attempt,
                elapsed_ms = elapsed_ms(started),
                outcome = ?failure.kind,
                http_status = failure.http_status.unwrap_or(0),
                error = %failure.message,
                "Transit call failed"
            );
            let detail = TransitError {
                operation: op,
                http_status: failure.http_status,
                message: failure.message,
                attempts: attempt,
            };
            let mut err = ProviderError::new(failure.kind, detail.to_string()).with_source(detail);
            if !call.key.is_empty() {
                err = err.with_key_id(call.key);
            }
            return Err(err);
        }
    }

    /// `sys/health`: the seal state and cluster id (no token needed).
    pub(crate) async fn health(&self) -> Result<Health, ProviderError> {
        let no_context = EncryptionContext::default();
        let call = Call {
            op: TransitOperation::Health,
            key: "",
            context: &no_context,
        };
        // standbyok: a standby answers 200 too; a sealed server answers 503,
        // which the retry loop sees as `Sealed`.
        let body = self
            .attempts(
                &call,
                Method::GET,
                "sys/health?standbyok=true&perfstandbyok=true",
                None,
                None,
            )
            .await?;
        parse(&body, TransitOperation::Health, "")
    }

    /// `GET <mount>/keys/<name>`: the key must be a derived, symmetric key
    /// that can encrypt and decrypt.
    pub(crate) async fn check_key(&self, name: &str, key_id: &str) -> Result<(), ProviderError> {
        let no_context = EncryptionContext::default();
        let call = Call {
            op: TransitOperation::ReadKey,
            key: key_id,
            context: &no_context,
        };
        let path = format!("{}/keys/{name}", self.mount);
        let body = self
            .call(&call, Method::GET, &path, None)
            .await
            .map_err(|e| {
                if e.kind() == ProviderErrorKind::AccessDenied {
                    ProviderError::new(
                        ProviderErrorKind::AccessDenied,
                        format!(
                            "{e} (the provider reads the key's configuration at start: the \
                             policy needs `read` on {path}; see docs/keys.md)"
                        ),
                    )
                    .with_key_id(key_id)
                } else {
                    e
                }
            })?;
        let cfg: Data<KeyConfig> = parse(&body, TransitOperation::ReadKey, key_id)?;
        let cfg = cfg.data;
        let refuse = |msg: String| {
            Err(ProviderError::new(ProviderErrorKind::Config, msg).with_key_id(key_id))
        };
        if !KEY_TYPES.contains(&cfg.key_type.as_str()) {
            return refuse(format!(
                "Transit key {name} is of type {}; rowseal needs one of {}",
                cfg.key_type,
                KEY_TYPES.join(", ")
            ));
        }
        if !cfg.derived {
            return refuse(format!(
                "Transit key {name} is not derived: Vault would ignore rowseal's encryption \
                 context. Create it with `derived=true` (a key's derivation cannot be changed)"
            ));
        }
        if !cfg.supports_encryption || !cfg.supports_decryption {
            return refuse(format!(
                "Transit key {name} does not support both encryption and decryption"
            ));
        }
        Ok(())
    }

    /// The key id of a rewrap destination on this server: an allowed key id,
    /// or a Transit key name (checked once, then remembered).
    async fn destination(&self, destination: &str) -> Result<(String, String), ProviderError> {
        if let Some((id, name)) = self
            .allowed
            .iter()
            .find(|(id, name)| id == destination || name == destination)
        {
            return Ok((id.clone(), name.clone()));
        }
        if destination.starts_with(KEY_ID_PREFIX) {
            let (name, id) = match self.parse_own_id(destination) {
                Some(name) => (name.to_owned(), destination.to_owned()),
                None => {
                    return Err(ProviderError::new(
                        ProviderErrorKind::Config,
                        "the destination key is on another Transit server, namespace or \
                         mount: rewrap it with the provider that serves it",
                    )
                    .with_key_id(destination))
                }
            };
            return self.checked_destination(name, id).await;
        }
        let id = key_id_of(
            &self.cluster_id,
            self.namespace.as_deref(),
            &self.mount,
            destination,
        );
        self.checked_destination(destination.to_owned(), id).await
    }

    async fn checked_destination(
        &self,
        name: String,
        id: String,
    ) -> Result<(String, String), ProviderError> {
        let known = self
            .destinations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&name);
        if !known {
            self.check_key(&name, &id).await?;
            self.destinations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.clone(), id.clone());
        }
        Ok((id, name))
    }

    /// The key name in one of this provider's own key ids (same cluster,
    /// namespace and mount).
    fn parse_own_id<'a>(&self, id: &'a str) -> Option<&'a str> {
        let own_prefix = key_id_of(&self.cluster_id, self.namespace.as_deref(), &self.mount, "");
        id.strip_prefix(&own_prefix)
            .filter(|name| !name.is_empty() && !name.contains(':'))
    }

    /// One Transit key operation: a POST to `<mount>/<endpoint>/<name>` with
    /// `fields` and rowseal's context, answered with `data` of type `T`.
    async fn key_call<T: DeserializeOwned>(
        &self,
        op: TransitOperation,
        endpoint: &str,
        name: &str,
        key_id: &str,
        context: &EncryptionContext,
        fields: KeyIn<'_>,
    ) -> Result<T, ProviderError> {
        let call = Call {
            op,
            key: key_id,
            context,
        };
        let context_b64 = context_b64(context);
        let body = json_body(&KeyIn {
            context: &context_b64,
            ..fields
        });
        let path = format!("{}/{endpoint}/{name}", self.mount);
        let answer = self.call(&call, Method::POST, &path, Some(body)).await?;
        let out: Data<T> = parse(&answer, op, key_id)?;
        Ok(out.data)
    }

    async fn decrypt_with(
        &self,
        name: &str,
        key_id: &str,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<SecretKey, ProviderError> {
        let fields = KeyIn {
            ciphertext: Some(transit_ciphertext(wrapped)?),
            ..KeyIn::default()
        };
        let out: DecryptOut = self
            .key_call(
                TransitOperation::Decrypt,
                "decrypt",
                name,
                key_id,
                context,
                fields,
            )
            .await?;
        decode_key(&out.plaintext, TransitOperation::Decrypt, key_id)
    }
}

impl TransitProvider {
    /// `encrypt/<name>`: wraps an existing data key under a Transit key.
    async fn encrypt_with(
        &self,
        name: &str,
        key_id: &str,
        key: &SecretKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey, ProviderError> {
        let plaintext = Zeroizing::new(B64.encode(key.expose_secret()));
        let fields = KeyIn {
            plaintext: Some(&plaintext),
            ..KeyIn::default()
        };
        let out: CiphertextOut = self
            .key_call(
                TransitOperation::Encrypt,
                "encrypt",
                name,
                key_id,
                context,
                fields,
            )
            .await?;
        WrappedKey::new(key_id, out.ciphertext.into_bytes()).map_err(|e| {
            ProviderError::new(ProviderErrorKind::Other, e.to_string()).with_key_id(key_id)
        })
    }
}

/// A wrapped key's ciphertext as Transit's `vault:v<N>:<base64>` text; anything
/// else is refused before a request.
fn transit_ciphertext(wrapped: &WrappedKey) -> Result<&str, ProviderError> {
    std::str::from_utf8(wrapped.ciphertext())
        .ok()
        .filter(|c| c.starts_with("vault:v") && c.len() < 4096)
        .ok_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::InvalidCiphertext,
                "the wrapped key is not a Transit ciphertext",
            )
            .with_key_id(wrapped.key_id())
        })
}

#[async_trait]
impl KeyProvider for TransitProvider {
    fn name(&self) -> &'static str {
        "vault-transit"
    }

    fn current_key_id(&self) -> &str {
        &self.key_id
    }

    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey> {
        let fields = KeyIn {
            bits: Some(256),
            ..KeyIn::default()
        };
        let out: DataKeyOut = self
            .key_call(
                TransitOperation::DataKey,
                "datakey/plaintext",
                &self.key_name,
                &self.key_id,
                context,
                fields,
            )
            .await?;
        let plaintext = decode_key(&out.plaintext, TransitOperation::DataKey, &self.key_id)?;
        Ok(DataKey {
            plaintext,
            wrapped: WrappedKey::new(self.key_id.clone(), out.ciphertext.into_bytes())?,
        })
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<SecretKey> {
        let key_id = wrapped.key_id();
        let name = self.allowed_name(TransitOperation::Decrypt, key_id, context)?;
        Ok(self.decrypt_with(name, key_id, wrapped, context).await?)
    }

    async fn reencrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
        destination_key_id: &str,
    ) -> Result<WrappedKey> {
        let source_id = wrapped.key_id();
        // The source comes from the database: it must be allowed. The
        // destination is the operator's choice.
        let source = self
            .allowed_name(TransitOperation::Rewrap, source_id, context)?
            .to_owned();
        let (dest_id, dest_name) = self.destination(destination_key_id).await?;
        if dest_name != source {
            let key = self
                .decrypt_with(&source, source_id, wrapped, context)
                .await?;
            return Ok(self
                .encrypt_with(&dest_name, &dest_id, &key, context)
                .await?);
        }
        // The same Transit key: rewrap under its latest version, inside Vault.
        let fields = KeyIn {
            ciphertext: Some(transit_ciphertext(wrapped)?),
            ..KeyIn::default()
        };
        let out: CiphertextOut = self
            .key_call(
                TransitOperation::Rewrap,
                "rewrap",
                &source,
                source_id,
                context,
                fields,
            )
            .await?;
        WrappedKey::new(dest_id, out.ciphertext.into_bytes())
    }

    fn allows_key(&self, key_id: &str) -> bool {
        self.allowed.iter().any(|(id, _)| id == key_id)
    }

    async fn wrap_data_key(
        &self,
        key: &SecretKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        Ok(self
            .encrypt_with(&self.key_name, &self.key_id, key, context)
            .await?)
    }
}

impl fmt::Debug for TransitProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransitProvider")
            .field("address", &self.http.base())
            .field("namespace", &self.namespace)
            .field("mount", &self.mount)
            .field("key", &self.key_name)
            .field("key_id", &self.key_id)
            .field(
                "allowed_keys",
                &self.allowed.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .field("auth", &self.auth.method())
            .field("retry", &self.retry)
            .field("operation_timeout", &self.operation_timeout)
            .field("calls", &self.counters)
            .finish()
    }
}
