#!/usr/bin/env bash
# Runs a command with a local KMS-compatible server (moto) listening on
# 127.0.0.1, for rowseal-kms's integration tests:
#
#   bash scripts/with-kms-server.sh cargo test -p rowseal-kms
#
# - Installs moto's server from PyPI into .venv-moto/ at the repository top
#   (reused on later runs if it already has moto).
# - Starts `moto_server` on 127.0.0.1 on a free port and waits until it answers.
# - Exports ROWSEAL_TEST_KMS_ENDPOINT=http://127.0.0.1:PORT, plus dummy AWS
#   credentials and a region, then runs the command.
# - Stops the server on exit and exits with the command's status.
#
# If moto cannot be installed or started: with CI=true this fails (exit 1);
# otherwise it prints a loud warning and runs the command without
# ROWSEAL_TEST_KMS_ENDPOINT (the KMS tests then skip themselves).
#
# Environment: ROWSEAL_MOTO_VENV (venv path), ROWSEAL_MOTO_SPEC (pip
# requirement, default below), PYTHON (interpreter used to create the venv).
set -uo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROWSEAL_MOTO_VENV:-$ROOT/.venv-moto}"
MOTO_SPEC="${ROWSEAL_MOTO_SPEC:-moto[server]>=5.1,<6}"
PYTHON="${PYTHON:-python3}"
LOG="$(mktemp -t rowseal-moto.XXXXXX.log)"
SERVER_PID=""

say() { echo "with-kms-server: $*" >&2; }

# unavailable WHY COMMAND...: fail under CI, else warn and run COMMAND alone.
unavailable() {
  local why="$1"
  shift
  say "$why"
  if [ "${CI:-}" = "true" ]; then
    say "CI=true: a KMS test server is required; failing."
    [ -s "$LOG" ] && { say "server log:"; tail -n 40 "$LOG" >&2; }
    exit 1
  fi
  echo >&2
  echo "###########################################################################" >&2
  echo "# WARNING: no KMS test server. The rowseal-kms integration tests will    #" >&2
  echo "# SKIP. Running the command without ROWSEAL_TEST_KMS_ENDPOINT.            #" >&2
  echo "###########################################################################" >&2
  echo >&2
  unset ROWSEAL_TEST_KMS_ENDPOINT
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

have_moto() {
  [ -x "$VENV/bin/moto_server" ] && "$VENV/bin/python" -c 'import moto, flask, cryptography' 2>/dev/null
}

if ! have_moto; then
  say "installing $MOTO_SPEC into $VENV"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" >>"$LOG" 2>&1 || unavailable "cannot create a virtual environment with $PYTHON (python3-venv missing?)" "$@"
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$MOTO_SPEC" >>"$LOG" 2>&1 \
    || unavailable "pip could not install $MOTO_SPEC (see the log above)" "$@"
  have_moto || unavailable "moto installed but moto_server is not usable" "$@"
fi

free_port() {
  "$VENV/bin/python" - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

answers() {
  "$VENV/bin/python" - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen("http://127.0.0.1:%s/moto-api/" % sys.argv[1], timeout=2).read()
PY
}

PORT=""
for attempt in 1 2 3; do
  candidate="$(free_port)" || break
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$candidate" >>"$LOG" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 150); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    if answers "$candidate"; then PORT="$candidate"; break; fi
    sleep 0.2
  done
  [ -n "$PORT" ] && break
  say "moto_server did not come up on port $candidate (attempt $attempt)"
  stop_server
done
[ -n "$PORT" ] || unavailable "moto_server could not be started" "$@"

export ROWSEAL_TEST_KMS_ENDPOINT="http://127.0.0.1:$PORT"
# Dummy credentials and region: moto accepts anything, and nothing here may
# reach a real AWS endpoint.
export AWS_ACCESS_KEY_ID=rowseal-test
export AWS_SECRET_ACCESS_KEY=rowseal-test
export AWS_SESSION_TOKEN=rowseal-test
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_ENDPOINT_URL AWS_ENDPOINT_URL_KMS
say "moto_server (pid $SERVER_PID) on $ROWSEAL_TEST_KMS_ENDPOINT"

"$@"
status=$?
stop_server
exit "$status"
