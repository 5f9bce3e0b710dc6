//! [`AwsKmsProviderBuilder`]: where the client, key, allow-list, timeouts,
//! retries and replica regions are chosen.

use std::fmt;
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{Region, SharedHttpClient};
use aws_sdk_kms::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use rowseal_core::{Error, Result};

use crate::arn;
use crate::provider::{AwsKmsProvider, RegionClient};
use rowseal_core::RetryPolicy;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

enum Replica {
    Region(String),
    Client(Client),
}

/// Configures and builds an [`AwsKmsProvider`]. Made by
/// [`AwsKmsProvider::builder`].
///
/// Where the KMS client comes from, in order of precedence:
/// 1. [`client`](Self::client): a client you configured yourself;
/// 2. [`sdk_config`](Self::sdk_config): an `SdkConfig` you loaded;
/// 3. otherwise the standard AWS configuration is loaded (environment
///    variables, shared config and credentials files, web identity, ECS and
///    EC2 instance metadata), as `aws_config::defaults` does, with an HTTPS
///    client on rustls.
///
/// The endpoint is the SDK's: `AWS_ENDPOINT_URL_KMS`, then `AWS_ENDPOINT_URL`
/// (or `endpoint_url` in the profile), unless [`endpoint_url`](Self::endpoint_url)
/// sets one explicitly, which wins.
///
/// Whatever the source, the provider replaces the client's retry configuration
/// (it retries itself, per [`RetryPolicy`], so that attempts are counted and
/// final errors are never retried) and its timeouts (connect, attempt and
/// operation timeouts below).
///
/// The provider only unwraps and rewraps keys wrapped under the KMS keys on
/// its allow-list: the configured key, and the keys added with
/// [`allow_key`](Self::allow_key) (see there).
#[must_use]
pub struct AwsKmsProviderBuilder {
    key_id: String,
    client: Option<Client>,
    sdk_config: Option<SdkConfig>,
    region: Option<String>,
    endpoint_url: Option<String>,
    connect_timeout: Duration,
    attempt_timeout: Duration,
    operation_timeout: Duration,
    retry: RetryPolicy,
    replicas: Vec<Replica>,
    allowed_keys: Vec<String>,
    grant_tokens: Vec<String>,
}

impl AwsKmsProvider {
    /// Starts configuring a provider for the KMS key `key_id`: a key id, a key
    /// ARN, an alias name (`alias/prod-orders-db`) or an alias ARN. (Written
    /// beside the builder, which depends on the provider, not the other way.)
    pub fn builder(key_id: impl Into<String>) -> AwsKmsProviderBuilder {
        AwsKmsProviderBuilder::new(key_id)
    }
}

impl AwsKmsProviderBuilder {
    fn new(key_id: impl Into<String>) -> Self {
        AwsKmsProviderBuilder {
            key_id: key_id.into(),
            client: None,
            sdk_config: None,
            region: None,
            endpoint_url: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            retry: RetryPolicy::default(),
            replicas: Vec::new(),
            allowed_keys: Vec::new(),
            grant_tokens: Vec::new(),
        }
    }

    /// Uses this KMS client (its credentials, region, endpoint and HTTP
    /// client). Its retry and timeout settings are replaced, see above.
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the KMS client from this shared AWS configuration.
    pub fn sdk_config(mut self, config: SdkConfig) -> Self {
        self.sdk_config = Some(config);
        self
    }

    /// The region of the key (default: the configuration's, e.g. `AWS_REGION`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// An explicit KMS endpoint, e.g. `http://127.0.0.1:4566` for a local
    /// KMS-compatible server. Overrides `AWS_ENDPOINT_URL_KMS` and
    /// `AWS_ENDPOINT_URL`. Applies to the replica regions added with
    /// [`replica_region`](Self::replica_region) too.
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Most time to establish a connection (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Most time for one HTTP attempt, connection included (default 5 s). An
    /// attempt that times out is retried.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Most time for one call in one region, all attempts and backoff sleeps
    /// included (default 15 s). A multi-Region fallback gives each region its
    /// own budget.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How transient failures are retried (default: [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Adds a region where `Decrypt` of a multi-Region key (`mrk-...`) may
    /// fall back to the replica key, when the key's own region is unavailable,
    /// times out, throttles or does not know the key. Regions are tried in the
    /// order they are added. The replica's client is the primary's
    /// configuration with this region.
    pub fn replica_region(mut self, region: impl Into<String>) -> Self {
        self.replicas.push(Replica::Region(region.into()));
        self
    }

    /// Adds a fallback region served by this client (its region must be set),
    /// like [`replica_region`](Self::replica_region) but with a client of
    /// your own (other credentials or endpoint).
    pub fn replica_client(mut self, client: Client) -> Self {
        self.replicas.push(Replica::Client(client));
        self
    }

    /// Also allows keys wrapped under the KMS key `key_arn` to be unwrapped
    /// (`Decrypt`) and rewrapped from (`ReEncrypt` source). Repeatable.
    ///
    /// Every wrapped key names the KMS key it was made under, and that name is
    /// read from the database (`rowseal_keys`, `kms`-mode row headers). So
    /// that whoever can write the database cannot make the application use a
    /// KMS key of their choosing (one of their own that the application's
    /// role may use, say, to plant a tenant key they know), the provider
    /// refuses, before any request to KMS, every wrapped key whose key is not
    /// on its allow-list, with
    /// [`ProviderErrorKind::KeyNotAllowed`](rowseal_core::ProviderErrorKind::KeyNotAllowed).
    /// The list is the configured key (as resolved to its ARN by
    /// [`build`](Self::build)) plus the keys added here: add the keys that
    /// older data is still wrapped under (the previous key, after an alias
    /// was re-pointed, until `rowseal rewrap` has moved everything).
    ///
    /// `key_arn` must be a full key ARN
    /// (`arn:aws:kms:REGION:ACCOUNT:key/KEY-ID`): a stored key id is always
    /// a key ARN, so an alias or a bare key id could never match one (and an
    /// alias may be re-pointed by whoever controls it). Anything else makes
    /// [`build`](Self::build) fail with [`Error::KeyConfig`]. A multi-Region
    /// key (`mrk-...`) allowed by its ARN in one region also allows its
    /// replicas in the other regions (same partition, account and key id).
    pub fn allow_key(mut self, key_arn: impl Into<String>) -> Self {
        self.allowed_keys.push(key_arn.into());
        self
    }

    /// A grant token to send with every KMS request (repeatable), for a key
    /// this service may use through a grant that has not yet propagated
    /// (`CreateGrant` returns it). Grant tokens are not secret, but only
    /// their number appears in `Debug` output.
    pub fn grant_token(mut self, token: impl Into<String>) -> Self {
        self.grant_tokens.push(token.into());
        self
    }

    /// Several grant tokens (see [`grant_token`](Self::grant_token)).
    pub fn grant_tokens<I>(mut self, tokens: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.grant_tokens.extend(tokens.into_iter().map(Into::into));
        self
    }

    /// Adds each of these key ARNs to the allow-list, as
    /// [`allow_key`](Self::allow_key) does.
    pub fn allow_keys<I>(mut self, key_arns: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.allowed_keys
            .extend(key_arns.into_iter().map(Into::into));
        self
    }

    /// Loads the configuration if needed, builds the clients and resolves the
    /// key to its ARN with `DescribeKey`, checking that it is an enabled
    /// symmetric encryption key.
    ///
    /// Fails with [`Error::KeyConfig`] if an allow-list entry is not a key ARN
    /// (checked first, before anything is loaded or sent) or if no region is
    /// configured, and with [`Error::Provider`] if the key cannot be
    /// described (not found, access denied, disabled, not a symmetric
    /// encryption key, KMS unreachable).
    pub async fn build(self) -> Result<AwsKmsProvider> {
        for entry in &self.allowed_keys {
            check_allowed_key(entry)?;
        }
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.attempt_timeout)
            .build();

        let (mut base, mut region) = match (self.client, self.sdk_config) {
            (Some(client), _) => {
                let conf = client.config();
                let mut b = conf.to_builder();
                if conf.http_client().is_none() {
                    b.set_http_client(Some(https_client()));
                }
                (b, conf.region().map(|r| r.as_ref().to_owned()))
            }
            (None, sdk) => {
                let sdk = match sdk {
                    Some(sdk) => sdk,
                    None => {
                        let mut loader = aws_config::defaults(BehaviorVersion::latest())
                            .http_client(https_client());
                        if let Some(r) = &self.region {
                            loader = loader.region(Region::new(r.clone()));
                        }
                        loader.load().await
                    }
                };
                if sdk.credentials_provider().is_none() {
                    return Err(Error::KeyConfig {
                        reason: "the AWS configuration has no credentials provider".into(),
                    });
                }
                let mut b = aws_sdk_kms::config::Builder::from(&sdk);
                if sdk.http_client().is_none() {
                    b.set_http_client(Some(https_client()));
                }
                (b, sdk.region().map(|r| r.as_ref().to_owned()))
            }
        };
        if let Some(r) = self.region {
            region = Some(r);
        }
        let region = region.ok_or_else(|| Error::KeyConfig {
            reason:
                "no AWS region for KMS: set AWS_REGION, a profile region, or the builder's region()"
                    .into(),
        })?;
        base = base
            .region(Region::new(region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts.clone());
        if let Some(url) = &self.endpoint_url {
            base = base.endpoint_url(url.clone());
        }
        let primary = RegionClient {
            region: region.clone(),
            client: Client::from_conf(base.clone().build()),
        };

        let mut replicas = Vec::with_capacity(self.replicas.len());
        for replica in self.replicas {
            let rc = match replica {
                Replica::Region(r) => RegionClient {
                    client: Client::from_conf(base.clone().region(Region::new(r.clone())).build()),
                    region: r,
                },
                Replica::Client(client) => {
                    let conf = client.config();
                    let r = conf
                        .region()
                        .map(|r| r.as_ref().to_owned())
                        .ok_or_else(|| Error::KeyConfig {
                            reason: "a replica KMS client has no region".into(),
                        })?;
                    let mut b = conf
                        .to_builder()
                        .retry_config(RetryConfig::disabled())
                        .timeout_config(timeouts.clone());
                    if conf.http_client().is_none() {
                        b.set_http_client(Some(https_client()));
                    }
                    RegionClient {
                        client: Client::from_conf(b.build()),
                        region: r,
                    }
                }
            };
            if rc.region != region
                && !replicas
                    .iter()
                    .any(|x: &RegionClient| x.region == rc.region)
            {
                replicas.push(rc);
            }
        }

        AwsKmsProvider::connect(
            self.key_id,
            self.allowed_keys,
            self.grant_tokens,
            primary,
            replicas,
            self.retry,
            self.operation_timeout,
        )
        .await
    }
}

/// Checks an allow-list entry the way [`AwsKmsProviderBuilder::build`] does
/// (see [`allow_key`](AwsKmsProviderBuilder::allow_key)): it must be a full
/// KMS key ARN (`arn:PARTITION:kms:REGION:ACCOUNT:key/KEY-ID`), since a stored
/// key id is always one and an alias or a bare key id could never match.
/// Fails with [`Error::KeyConfig`] naming the entry (a key name, not a
/// secret). For configuration front ends that check settings before building
/// a provider.
pub fn check_allowed_key(entry: &str) -> Result<()> {
    if arn::is_key_arn(entry) {
        return Ok(());
    }
    // Bounded: the entry comes from configuration and only names a key.
    let shown: String = entry.chars().take(200).collect();
    Err(Error::KeyConfig {
        reason: format!(
            "KMS allow-list entry {shown:?} is not a key ARN \
             (arn:PARTITION:kms:REGION:ACCOUNT:key/KEY-ID): wrapped keys always record \
             the key ARN, so an alias or a bare key id would never match"
        ),
    })
}

/// The HTTPS client used when none is configured: hyper with rustls (ring),
/// trusting the platform's root certificates.
fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

impl fmt::Debug for AwsKmsProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsProviderBuilder")
            .field("key_id", &self.key_id)
            .field("client", &self.client.is_some())
            .field("sdk_config", &self.sdk_config.is_some())
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("retry", &self.retry)
            .field("allowed_keys", &self.allowed_keys)
            .field("grant_tokens", &self.grant_tokens.len())
            .field(
                "replicas",
                &self
                    .replicas
                    .iter()
                    .map(|r| match r {
                        Replica::Region(r) => r.clone(),
                        Replica::Client(c) => c
                            .config()
                            .region()
                            .map_or_else(|| "(client)".to_owned(), |r| r.as_ref().to_owned()),
                    })
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}
