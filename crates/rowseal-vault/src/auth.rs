//! How the provider authenticates: a token, or an AppRole login renewed
//! before its token expires.

use std::fmt;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// How a [`TransitProvider`](crate::TransitProvider) authenticates to Vault.
///
/// Secrets are zeroized on drop and never printed (`Debug` shows the method
/// and the role id only).
///
/// ```
/// use rowseal_vault::TransitAuth;
/// let auth = TransitAuth::approle("rowseal-app", "s3cr3t-id");
/// assert!(!format!("{auth:?}").contains("s3cr3t"));
/// ```
#[non_exhaustive]
#[derive(Clone)]
pub enum TransitAuth {
    /// A Vault token (`VAULT_TOKEN`). Used as is: give the service a periodic
    /// token or an orphan token with a TTL longer than its life, or use
    /// AppRole, which the provider renews by logging in again.
    Token(Zeroizing<String>),
    /// AppRole: logs in at `auth/<mount>/login` with the role id and secret
    /// id, and logs in again before the token's lease runs out (at two thirds
    /// of it) or when Vault refuses the token.
    AppRole {
        /// The auth mount (default `approle`).
        mount: String,
        /// The role id (not secret on its own).
        role_id: String,
        /// The secret id.
        secret_id: Zeroizing<String>,
    },
}

impl TransitAuth {
    /// A token.
    pub fn token(token: impl Into<String>) -> Self {
        TransitAuth::Token(Zeroizing::new(token.into()))
    }

    /// AppRole on the default mount (`approle`).
    pub fn approle(role_id: impl Into<String>, secret_id: impl Into<String>) -> Self {
        TransitAuth::AppRole {
            mount: "approle".into(),
            role_id: role_id.into(),
            secret_id: Zeroizing::new(secret_id.into()),
        }
    }

    /// The same AppRole credentials on another auth mount.
    pub fn with_mount(self, new_mount: impl Into<String>) -> Self {
        match self {
            TransitAuth::AppRole {
                role_id, secret_id, ..
            } => TransitAuth::AppRole {
                mount: new_mount.into().trim_matches('/').to_owned(),
                role_id,
                secret_id,
            },
            other => other,
        }
    }

    pub(crate) fn method(&self) -> &'static str {
        match self {
            TransitAuth::Token(_) => "token",
            TransitAuth::AppRole { .. } => "approle",
        }
    }
}

impl fmt::Debug for TransitAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitAuth::Token(_) => f.write_str("Token(<redacted>)"),
            TransitAuth::AppRole { mount, role_id, .. } => f
                .debug_struct("AppRole")
                .field("mount", mount)
                .field("role_id", role_id)
                .field("secret_id", &"<redacted>")
                .finish(),
        }
    }
}

/// The token in use, and when to replace it.
pub(crate) struct Session {
    pub(crate) token: Zeroizing<String>,
    /// When to log in again (AppRole), if the token has a lease.
    pub(crate) renew_at: Option<Instant>,
    /// Bumped at every login, so that a task that saw the token refused
    /// logs in again only if nobody else has since.
    pub(crate) generation: u64,
    /// When this token was obtained.
    pub(crate) since: Instant,
}

/// A refused token is replaced by a new login only if it is at least this
/// old: a policy that denies the key (a customer revoking access) refuses
/// every new token too, and each refused call must not become a login.
pub(crate) const MIN_RELOGIN_AGE: Duration = Duration::from_secs(30);

impl Session {
    pub(crate) fn from_token(token: Zeroizing<String>) -> Self {
        Session {
            token,
            renew_at: None,
            generation: 0,
            since: Instant::now(),
        }
    }

    pub(crate) fn from_login(token: Zeroizing<String>, lease: Duration, generation: u64) -> Self {
        let renew_at = (!lease.is_zero()).then(|| Instant::now() + lease * 2 / 3);
        Session {
            token,
            renew_at,
            generation,
            since: Instant::now(),
        }
    }

    /// Whether a refusal of this token may be answered with a new login.
    pub(crate) fn may_relogin_after_refusal(&self) -> bool {
        self.since.elapsed() >= MIN_RELOGIN_AGE
    }

    pub(crate) fn needs_renewal(&self) -> bool {
        self.renew_at.is_some_and(|at| Instant::now() >= at)
    }
}
