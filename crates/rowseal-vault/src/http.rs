//! The HTTP(S) client: one request, its answer as JSON, nothing else. The
//! provider decides what to send, when to retry and what an answer means.

use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rowseal_core::ProviderErrorKind;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use crate::error::Failure;

/// A Vault HTTP client for one server address and namespace.
pub(crate) struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `https://host:port`, no trailing slash.
    base: String,
    namespace: Option<String>,
}

/// An answer: its status, and its body (zeroized on drop: a datakey or
/// decrypt answer holds a plaintext key).
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Zeroizing<Vec<u8>>,
}

/// Where TLS trust and client identity come from.
#[derive(Default, Clone)]
pub(crate) struct TlsFiles {
    pub(crate) ca_file: Option<std::path::PathBuf>,
    pub(crate) client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

fn config_error(msg: String) -> Failure {
    Failure::new(ProviderErrorKind::Config, msg)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Failure> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            config_error(format!(
                "cannot read certificates from {}: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(config_error(format!(
            "no PEM certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

fn tls_config(files: &TlsFiles) -> Result<rustls::ClientConfig, Failure> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca_file {
        // As VAULT_CACERT does: the given CA replaces the system's roots.
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| {
                    config_error(format!("bad CA certificate in {}: {e}", path.display()))
                })?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system root rustls cannot parse is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    match &files.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                config_error(format!("cannot read the client key {}: {e}", key.display()))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_error(format!("client certificate: {e}")))
        }
    }
}

impl Http {
    pub(crate) fn new(
        address: &str,
        namespace: Option<String>,
        tls: &TlsFiles,
        connect_timeout: std::time::Duration,
    ) -> Result<Self, Failure> {
        let base = address.trim_end_matches('/').to_owned();
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            // Not echoed: an address may carry credentials (user:pass@host).
            return Err(config_error(
                "the Vault address must start with https:// (or http:// to ask for plaintext)"
                    .into(),
            ));
        }
        let authority = base
            .split_once("://")
            .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
        if authority.contains('@') {
            // The address is logged and shown in Debug output: credentials
            // belong in the authentication settings.
            return Err(config_error(
                "the Vault address holds credentials (user@host): authenticate with a token \
                 or AppRole instead"
                    .into(),
            ));
        }
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(tls)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Http {
            client,
            base,
            namespace,
        })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request to `/v1/<path>`.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<Answer, Failure> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}/v1/{}", self.base, path))
            .header("accept", "application/json");
        if let Some(token) = token {
            req = req.header("X-Vault-Token", token);
        }
        // sys/health answers only in the root namespace.
        if let Some(ns) = self
            .namespace
            .as_ref()
            .filter(|_| !path.starts_with("sys/health"))
        {
            req = req.header("X-Vault-Namespace", ns);
        }
        // The request body can hold a plaintext key (encrypt): it goes out as
        // one `Bytes`, and our copy is zeroized when this returns.
        let payload = match &body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::copy_from_slice(b)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| config_error(format!("bad request: {e}")))?;
        let resp = self.client.request(req).await.map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            let kind = if msg.contains("certificate") || msg.contains("InvalidCertificate") {
                // A TLS trust failure will not fix itself by retrying.
                ProviderErrorKind::Config
            } else {
                ProviderErrorKind::Unavailable
            };
            Failure::new(kind, msg)
        })?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::new(ProviderErrorKind::Unavailable, e.to_string()))?
            .to_bytes();
        Ok(Answer {
            status,
            body: Zeroizing::new(bytes.to_vec()),
        })
    }
}
