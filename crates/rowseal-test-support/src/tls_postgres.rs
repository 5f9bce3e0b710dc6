//! A PostgreSQL cluster of the test's own with `ssl = on`, started with the
//! machine's `initdb`/`pg_ctl` and a throw-away certificate authority made
//! with the `openssl` command: the server's certificate names `localhost`
//! only and is signed by that authority; a second, unrelated authority is
//! there to be refused. Only TLS connections are accepted (`hostssl` in
//! `pg_hba.conf`; a plaintext one is rejected), with `trust` for user
//! `root` once TLS is up.
//!
//! The cluster lives in a temporary directory, listens on 127.0.0.1 on a
//! free port, and is stopped and deleted on drop. PostgreSQL refuses to run
//! as root, so when the test runs as root the cluster is run as the
//! `postgres` user (`runuser`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster (see the module's documentation).
pub struct TlsPostgres {
    dir: PathBuf,
    data: PathBuf,
    /// The port it listens on (127.0.0.1 and `localhost`).
    pub port: u16,
    /// The certificate authority that signed the server's certificate
    /// (PEM).
    pub ca_cert: PathBuf,
    /// Another authority, which signed nothing the server presents (PEM).
    pub other_ca_cert: PathBuf,
    /// The OS user the cluster runs as (`None`: the current one).
    run_as: Option<&'static str>,
}

impl TlsPostgres {
    /// Starts a cluster, or reports the missing tool through
    /// [`crate::unreachable`] (a failure under `CI=true`) and returns `None`.
    pub fn start() -> Option<TlsPostgres> {
        for tool in ["initdb", "pg_ctl", "openssl"] {
            if Command::new(tool).arg("--version").output().is_err() {
                crate::unreachable(
                    &format!("`{tool}` (for the TLS PostgreSQL cluster)"),
                    &"not on PATH",
                );
                return None;
            }
        }
        let dir = std::env::temp_dir().join(crate::random_name());
        std::fs::create_dir_all(&dir).unwrap();
        let run_as = is_root().then_some("postgres");
        let me = TlsPostgres {
            data: dir.join("data"),
            port: free_port(),
            ca_cert: dir.join("ca.pem"),
            other_ca_cert: dir.join("other-ca.pem"),
            dir,
            run_as,
        };
        me.make_certificates();
        if let Some(user) = run_as {
            chown_recursive(&me.dir, user);
        }
        me.run(&[
            "initdb",
            "-D",
            path(&me.data),
            "-U",
            "root",
            "--auth=trust",
            "--no-sync",
        ]);
        let conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\n",
            me.port,
            path(&me.dir),
            path(&me.dir.join("server.pem")),
            path(&me.dir.join("server.key")),
        );
        append(&me.data.join("postgresql.conf"), &conf);
        std::fs::write(
            me.data.join("pg_hba.conf"),
            "hostssl all root 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 reject\nlocal all all trust\n",
        )
        .unwrap();
        let log = me.dir.join("server.log");
        me.run(&[
            "pg_ctl",
            "-D",
            path(&me.data),
            "-l",
            path(&log),
            "-w",
            "-t",
            "60",
            "start",
        ]);
        Some(me)
    }

    /// `postgres://root@<host>:<port>/postgres`, with `query` appended
    /// (`sslmode=...` and the like).
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://root@{host}:{}/postgres?{query}", self.port)
    }

    /// The server certificate's authority, and another one, made with
    /// `openssl`: RSA 2048, ten days, the server's certificate for
    /// `DNS:localhost` only (so `127.0.0.1` does not match it).
    fn make_certificates(&self) {
        let d = &self.dir;
        for (key, cert, name) in [
            ("ca.key", "ca.pem", "rowseal test CA"),
            ("other-ca.key", "other-ca.pem", "rowseal other CA"),
        ] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "10",
                    "-keyout",
                    key,
                    "-out",
                    cert,
                    "-subj",
                    &format!("/CN={name}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName = DNS:localhost\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "10",
                "-out",
                "server.pem",
                "-extfile",
                "server.ext",
            ],
        );
        // PostgreSQL refuses a key file others can read.
        set_mode(&d.join("server.key"), 0o600);
    }

    /// Runs a PostgreSQL tool as the cluster's user; panics with its output
    /// if it fails.
    fn run(&self, args: &[&str]) {
        let mut cmd = tool(self.run_as, args);
        let out = cmd.output().unwrap();
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            panic!(
                "{args:?} failed: {}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let data = path(&self.data).to_owned();
            let args = [
                "pg_ctl",
                "-D",
                data.as_str(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ];
            let mut cmd = tool(self.run_as, &args);
            let _ = cmd.output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `args` (a program and its arguments) as a command, run as `user` if
/// given.
fn tool(user: Option<&str>, args: &[&str]) -> Command {
    match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn append(file: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn set_mode(file: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn chown_recursive(dir: &Path, user: &str) {
    let out = Command::new("chown")
        .args(["-R", user, path(dir)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port nothing listens on now (the kernel's pick).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
