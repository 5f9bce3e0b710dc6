#!/usr/bin/env bash
# Prepares examples/own-queries/.sqlx, the offline data of its
# compile-time-checked queries (what `cargo sqlx prepare` does, without
# sqlx-cli): for each database, a fresh database with the schema the
# queries are written against, then a build of the crate's queries with
# DATABASE_URL and SQLX_OFFLINE_DIR set, so that sqlx's macros check each
# query against that database and write its description. Also refreshes
# schema/<database>.sql, the schema in text (a test keeps it current).
#
#   bash scripts/sqlx-prepare.sh     # needs PostgreSQL and MariaDB (as for the tests)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
crate=examples/own-queries
pg_admin="postgres://root@127.0.0.1:5432/test"
name="rowseal_prepare_$$"

for db in sqlite postgres mysql; do
  cargo run -q --locked -p own-queries --bin own-queries-ddl -- "$db" >"$crate/schema/$db.sql"
done

out=$(mktemp -d)
sqlite_file="$out/prepare.db"
cleanup() {
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $name" >/dev/null 2>&1 || true
  mysql --protocol=tcp -h 127.0.0.1 -P 3306 -u root -e "DROP DATABASE IF EXISTS $name" >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT
psql -q "$pg_admin" -c "CREATE DATABASE $name"
mysql --protocol=tcp -h 127.0.0.1 -P 3306 -u root -e "CREATE DATABASE $name"

declare -A url=(
  [sqlite]="sqlite://$sqlite_file?mode=rwc"
  [postgres]="postgres://root@127.0.0.1:5432/$name"
  [mysql]="mysql://root@127.0.0.1:3306/$name"
)
mkdir -p "$out/sqlx"
for db in sqlite postgres mysql; do
  cargo run -q --locked -p own-queries --bin own-queries-ddl -- "$db" "${url[$db]}"
  # One database's queries at a time (each feature holds one database's).
  SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out/sqlx" DATABASE_URL="${url[$db]}" \
    cargo check -q --locked -p own-queries --no-default-features --features "$db" --all-targets
done
rm -rf "$crate/.sqlx"
mv "$out/sqlx" "$crate/.sqlx"
echo "sqlx-prepare: $(ls "$crate/.sqlx" | wc -l) queries in $crate/.sqlx"
