#!/usr/bin/env bash
# Instructions per row for sealing and opening a row (rowseal-core's row_seal
# bench), counted by callgrind: each case runs at two row counts, and
# (instructions at N2 - instructions at N1) / (N2 - N1) is the cost of one
# row with every fixed cost (process start, key set-up, prepared rows)
# cancelled. Instruction counts do not drift with machine load the way wall
# clock does on a shared 2-core machine.
#
# Usage: scripts/callgrind-seal.sh [N1 N2]   (default 2000 12000)
# Honours CARGO_TARGET_DIR. Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
n1=${1:-2000}
n2=${2:-12000}
bin=$(cargo bench -p rowseal-core --bench row_seal --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*row_seal[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "row_seal bench binary not found" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

total() { # case rows -> total instructions (Ir) of the run
    valgrind --tool=callgrind --callgrind-out-file="$out/$1.$2" "$bin" --callgrind-one "$1" "$2" \
        >/dev/null 2>"$out/$1.$2.log" || { cat "$out/$1.$2.log" >&2; exit 1; }
    sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$out/$1.$2"
}

declare -A per_row
for case in seal-bare seal-v2 seal-v1 open-bare open-v2 open-v1; do
    a=$(total "$case" "$n1")
    b=$(total "$case" "$n2")
    per_row[$case]=$(( (b - a) / (n2 - n1) ))
    printf '%-10s %8d instructions/row\n' "$case" "${per_row[$case]}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo "seal v2 / bare: $(ratio "${per_row[seal-v2]}" "${per_row[seal-bare]}")  (target <= 1.2)"
echo "open v2 / bare: $(ratio "${per_row[open-v2]}" "${per_row[open-bare]}")  (target <= 1.2)"
echo "seal v1 / bare: $(ratio "${per_row[seal-v1]}" "${per_row[seal-bare]}")"
echo "open v1 / bare: $(ratio "${per_row[open-v1]}" "${per_row[open-bare]}")"
