#!/usr/bin/env bash
# Instructions per row for sealing and opening a row (rowseal-core's row_seal
# bench), counted by callgrind: each case runs at two row counts, and
# (instructions at N2 - instructions at N1) / (N2 - N1) is the cost of one
# row with every fixed cost (process start, key set-up, prepared rows)
# cancelled. Instruction counts do not drift with machine load the way wall
# clock does on a shared 2-core machine.
#
# Valgrind does not offer the SHA-NI extension, so under callgrind sha2 takes
# its portable SHA-256 (~3,500 instructions a block, against under 200 with
# SHA-NI, which AES-NI/PCLMULQDQ-era x86 servers have), and rowseal (five
# compressions a row) would look worse against the bare calls (two) than it
# runs. So each case is also printed "at native SHA-256": its SHA-256 blocks
# (counted by callgrind) re-priced at the SHA-NI loop's instruction count,
# read from the bench binary's own disassembly. AES-NI and PCLMULQDQ run as
# themselves under valgrind and need no correction.
#
# Usage: scripts/callgrind-seal.sh [N1 N2]   (default 2000 12000)
# Honours CARGO_TARGET_DIR. Needs valgrind, objdump and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
n1=${1:-2000}
n2=${2:-12000}
bin=$(cargo bench -p rowseal-core --bench row_seal --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*row_seal[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "row_seal bench binary not found" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Instructions of one pass of the SHA-NI block loop (sha2's x86 backend):
# from the loop's first instruction to its backward branch.
shani=$(objdump -d --no-show-raw-insn "$bin" | python3 -c '
import re, sys
# Reads all of stdin: stopping early would fail objdump (pipefail).
fn, done = None, False
for line in sys.stdin:
    if done:
        continue
    if re.match(r"^[0-9a-f]+ <.*sha2.*sha256.*x86.*digest_blocks", line):
        fn = []
    elif fn is not None:
        if not line.strip():
            done = True
        else:
            fn.append(line)
insns = [l for l in (fn or []) if re.match(r"\s+[0-9a-f]+:\t", l)]
addr = [int(l.split(":")[0], 16) for l in insns]
for i, l in enumerate(insns):
    m = re.search(r"\tj(ne|nz|b|ae|l|g|a)\s+([0-9a-f]+)", l)
    if m and int(m.group(2), 16) < addr[i]:
        print(i - addr.index(int(m.group(2), 16)) + 1)
        break
else:
    print(0)
')

for case in seal-bare seal-v2 seal-v1 open-bare open-v2 open-v1; do
    for n in "$n1" "$n2"; do
        valgrind --tool=callgrind --callgrind-out-file="$out/$case.$n" "$bin" --callgrind-one "$case" "$n" \
            >/dev/null 2>"$out/$case.$n.log" || { cat "$out/$case.$n.log" >&2; exit 1; }
    done
done

python3 - "$out" "$n1" "$n2" "$shani" <<'PY'
import re, sys
out, n1, n2, shani = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def read(path):
    """Total instructions, and calls to and inclusive cost of compress256."""
    names, total, calls, incl = {}, 0, 0, 0
    cfn = None
    pending = False
    for line in open(path):
        if line.startswith("totals:") or line.startswith("summary:"):
            total = int(line.split()[1])
        # Function names are compressed: "(id) name" the first time, in an
        # fn= or a cfn= line, "(id)" after.
        m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(3):
                names[m.group(2)] = m.group(3)
            if m.group(1) == "cfn":
                cfn = names.get(m.group(2), "")
            continue
        m = re.match(r"calls=(\d+)", line)
        if m:
            pending = "sha2::sha256::compress256" in (cfn or "")
            if pending:
                calls += int(m.group(1))
            continue
        if pending:
            # The line after calls= holds the call's inclusive cost.
            incl += int(line.split()[1])
            pending = False
    return total, calls, incl

per = {}
for case in ["seal-bare", "seal-v2", "seal-v1", "open-bare", "open-v2", "open-v1"]:
    a, b = read(f"{out}/{case}.{n1}"), read(f"{out}/{case}.{n2}")
    d = [(y - x) / (n2 - n1) for x, y in zip(a, b)]
    ir, blocks, sha_ir = d
    native = ir - sha_ir + blocks * shani
    per[case] = (ir, native)
    print(f"{case:<10} {ir:8.0f} instructions/row under callgrind; "
          f"{blocks:4.1f} SHA-256 blocks/row; {native:8.0f} at native SHA-256 ({shani}/block)")
for op in ["seal", "open"]:
    for v in ["v2", "v1"]:
        r, b = per[f"{op}-{v}"], per[f"{op}-bare"]
        target = "  (target <= 1.2)" if v == "v2" else ""
        print(f"{op} {v} / bare: {r[0] / b[0]:.3f} under callgrind, "
              f"{r[1] / b[1]:.3f} at native SHA-256{target}")
PY
