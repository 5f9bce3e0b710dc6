//! [`TenantScope`]: which tenant's rows a decryption may open.

/// Which tenant's rows a read may decrypt.
///
/// Every read names it. With [`TenantScope::One`], a row whose tenant column
/// is not byte-for-byte that tenant is refused with
/// [`Error::TenantMismatch`](crate::Error::TenantMismatch) before any key is
/// fetched, so a query that forgets its `WHERE tenant = ...`, or a MySQL
/// collation that compares `ACME` equal to `acme`, fails closed instead of
/// leaking another tenant's rows. [`TenantScope::Any`] is the explicit
/// opt-out, for jobs that work across tenants on purpose (each row is still
/// opened with the keys of its own tenant).
///
/// A `&str` or `&String` converts to [`TenantScope::One`]:
///
/// ```
/// use rowseal_sqlx::TenantScope;
/// let scope: TenantScope<'_> = "acme".into();
/// assert_eq!(scope, TenantScope::One("acme"));
/// assert!(scope.admits("acme"));
/// assert!(!scope.admits("ACME"));
/// assert!(TenantScope::Any.admits("ACME"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantScope<'a> {
    /// Only this tenant's rows.
    One(&'a str),
    /// Rows of any tenant (cross-tenant jobs; say so explicitly).
    Any,
}

impl TenantScope<'_> {
    /// Whether a row of `tenant` may be decrypted under this scope (byte
    /// equality: no case folding, no normalization).
    pub fn admits(&self, tenant: &str) -> bool {
        match self {
            TenantScope::One(t) => t.as_bytes() == tenant.as_bytes(),
            TenantScope::Any => true,
        }
    }
}

impl<'a> From<&'a str> for TenantScope<'a> {
    fn from(tenant: &'a str) -> Self {
        TenantScope::One(tenant)
    }
}

impl<'a> From<&'a String> for TenantScope<'a> {
    fn from(tenant: &'a String) -> Self {
        TenantScope::One(tenant)
    }
}
