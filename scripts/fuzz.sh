#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/*.rs) for a bounded time and
# fails if any of them crashes (a panic, a failed invariant, a sanitizer report,
# a timeout or running out of memory).
#
#   bash scripts/fuzz.sh                    # 20 s per target (what CI runs)
#   bash scripts/fuzz.sh 3600               # an hour per target
#   bash scripts/fuzz.sh 600 row_header     # some targets only
#
# A target with a dictionary (fuzz/dict/<target>.dict: TOML syntax and the config
# keys for cli_config) gets it. Each run starts from the committed seeds (fuzz/corpus/<target>/) plus the
# corpus of earlier local runs (fuzz/work/<target>/, not committed); new inputs
# go to the latter. A crash leaves its input in fuzz/artifacts/<target>/:
# reproduce it with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`, and once
# fixed, commit it under fuzz/corpus/<target>/ so every later run replays it.
#
# Needs cargo-fuzz (installed from crates.io when missing). The machine has a
# stable toolchain only: RUSTC_BOOTSTRAP=1 lets it accept the sanitizer flags.
# The build goes to ROWSEAL_FUZZ_TARGET_DIR (default ~/.cache/rowseal/fuzz-target),
# outside the work tree, so that a fresh clone (CI) reuses an earlier build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

secs="${1:-20}"
shift || true
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh [seconds-per-target] [target...]" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz (crates.io)"
    cargo install cargo-fuzz --locked --version 0.13.2
fi
export RUSTC_BOOTSTRAP=1
target_dir="${ROWSEAL_FUZZ_TARGET_DIR:-$HOME/.cache/rowseal/fuzz-target}"
mkdir -p "$target_dir"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "== building the fuzz targets (${targets[*]})"
start=$(date +%s)
cargo fuzz build --target-dir "$target_dir"
echo "   built in $(($(date +%s) - start)) s"

# The committed seeds must still decode to the samples they carry
# (fuzz/tests/seed_corpus.rs; ROWSEAL_WRITE_SEEDS=1 bash scripts/fuzz.sh rewrites
# them). Built with the fuzz build's flags, so it reuses its artifacts.
host="$(rustc -vV | sed -n 's/^host: //p')"
echo "== the seed corpora decode as intended"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Zsanitizer=address \
-Cllvm-args=-sanitizer-coverage-stack-depth -Cdebug-assertions -Ccodegen-units=1" \
ASAN_OPTIONS=detect_odr_violation=0:detect_leaks=0 \
    cargo test -q --manifest-path fuzz/Cargo.toml --target "$host" --release \
    --config 'profile.release.debug="line-tables-only"' --target-dir "$target_dir" \
    --test seed_corpus
if [ "${ROWSEAL_WRITE_SEEDS:-}" = 1 ]; then
    echo "seeds written to fuzz/corpus/ (row headers and wrapped keys are random: commit only what you meant to change)"
    exit 0
fi

# Run the built binaries directly (`cargo fuzz run` would re-check the build
# before each target).
bin_dir="$target_dir/$host/release"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"
failed=()
for t in "${targets[@]}"; do
    work="fuzz/work/$t"
    mkdir -p "$work" "fuzz/corpus/$t" "fuzz/artifacts/$t"
    echo "== $t: ${secs} s"
    log="$target_dir/fuzz-$t.log"
    dict=()
    if [ -f "fuzz/dict/$t.dict" ]; then dict=(-dict="fuzz/dict/$t.dict"); fi
    if "$bin_dir/$t" -artifact_prefix="fuzz/artifacts/$t/" "${dict[@]}" \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 "$work" "fuzz/corpus/$t" >"$log" 2>&1; then
        runs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
        cov=$(grep -a -o 'cov: [0-9]*' "$log" | tail -1 || true)
        echo "   ok: ${runs:-?} runs, ${cov:-cov: ?}, no crash"
    else
        echo "   CRASH in $t (log: $log); last lines:"
        grep -a -v '^#[0-9]' "$log" | tail -40 | sed 's/^/   | /'
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "== fuzzing: ${#targets[@]} targets, ${secs} s each, no crash"
