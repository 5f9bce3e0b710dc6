#!/usr/bin/env bash
# Prepares the offline data (`.sqlx/`) of the compile-time-checked queries
# of examples/own-queries and examples/web (what `cargo sqlx prepare` does,
# without sqlx-cli). For each crate and each of its databases:
#
#   1. its DDL program (`own-queries-ddl`, `web-example-ddl`, built without
#      any checked query) writes schema/<database>.sql, the schema in text
#      (a test in each crate keeps it current), and creates that schema in a
#      fresh database;
#   2. a build of the crate with only that database's queries (its cargo
#      feature), with SQLX_OFFLINE=false, DATABASE_URL and SQLX_OFFLINE_DIR
#      set, so that sqlx's macros check each query against the database and
#      write its description.
#
# The new descriptions then replace the crate's .sqlx/. Run it after
# changing a query, a model or the schema:
#
#   bash scripts/sqlx-prepare.sh                 # both crates
#   bash scripts/sqlx-prepare.sh web             # examples/web only (SQLite, PostgreSQL)
#   bash scripts/sqlx-prepare.sh own-queries     # examples/own-queries only (+ MariaDB)
#
# Needs PostgreSQL (127.0.0.1:5432, user root, trust auth) and, for
# own-queries, MariaDB (127.0.0.1:3306, root, no password), as the tests do.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
pg_admin="postgres://root@127.0.0.1:5432/test"
mysql_cli=(mysql --protocol=tcp -h 127.0.0.1 -P 3306 -u root)

crates=("$@")
[ "${#crates[@]}" -gt 0 ] || crates=(own-queries web)
for c in "${crates[@]}"; do
  case "$c" in
    own-queries | web) ;;
    *) echo "sqlx-prepare: unknown crate $c (own-queries, web)" >&2; exit 2 ;;
  esac
done

out=$(mktemp -d)
pg_dbs=()
mysql_dbs=()
cleanup() {
  for d in "${pg_dbs[@]}"; do
    psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $d" >/dev/null 2>&1 || true
  done
  for d in "${mysql_dbs[@]}"; do
    "${mysql_cli[@]}" -e "DROP DATABASE IF EXISTS $d" >/dev/null 2>&1 || true
  done
  rm -rf "$out"
}
trap cleanup EXIT

# url KEY DATABASE: a fresh, empty database for KEY (a crate), by URL.
url() {
  local name="rowseal_prepare_$$_$1"
  case "$2" in
    sqlite) echo "sqlite://$out/$1.db?mode=rwc" ;;
    postgres)
      psql -q "$pg_admin" -c "CREATE DATABASE $name" >&2
      pg_dbs+=("$name")
      echo "postgres://root@127.0.0.1:5432/$name"
      ;;
    mysql)
      "${mysql_cli[@]}" -e "CREATE DATABASE $name" >&2
      mysql_dbs+=("$name")
      echo "mysql://root@127.0.0.1:3306/$name"
      ;;
  esac
}

# prepare PACKAGE DIR DDL_BIN "DDL_CARGO_FLAGS" DATABASE...
prepare() {
  local package="$1" dir="$2" ddl_bin="$3" ddl_flags="$4"
  shift 4
  local key="${package//-/_}" db u
  local ddl=(cargo run -q --locked -p "$package" $ddl_flags --bin "$ddl_bin" --)
  mkdir -p "$dir/schema" "$out/$key.sqlx"
  for db in "$@"; do
    "${ddl[@]}" "$db" >"$dir/schema/$db.sql"
    # (Not in a command substitution: url records the database for cleanup.)
    url "$key" "$db" >"$out/url"
    u=$(cat "$out/url")
    "${ddl[@]}" "$db" "$u"
    # One database's queries at a time (each feature holds one database's).
    SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out/$key.sqlx" DATABASE_URL="$u" \
      cargo check -q --locked -p "$package" --no-default-features --features "$db" --all-targets
  done
  rm -rf "$dir/.sqlx"
  mv "$out/$key.sqlx" "$dir/.sqlx"
  echo "sqlx-prepare: $(ls "$dir/.sqlx" | wc -l) queries in $dir/.sqlx"
}

for c in "${crates[@]}"; do
  case "$c" in
    # own-queries' library has no checked query: its DDL program builds
    # with the default features.
    own-queries)
      prepare own-queries examples/own-queries own-queries-ddl "" sqlite postgres mysql ;;
    # The web example's queries are in its library: the DDL program builds
    # without them (no database feature).
    web)
      prepare web-example examples/web web-example-ddl "--no-default-features" sqlite postgres ;;
  esac
done
