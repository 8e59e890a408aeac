#!/usr/bin/env bash
# Runs every cargo-fuzz target of recurrent for SECONDS each (default 60):
#   fuzz/run.sh 60
# Needs cargo-fuzz (installed here when missing) and a C++ compiler; the
# stable toolchain is enough with RUSTC_BOOTSTRAP=1 (cargo fuzz passes -Z
# flags for the sanitizer). New inputs go to fuzz/work/<target> (ignored by
# git); the committed seeds in fuzz/corpus/<target> are only read. A crash,
# a panic (an error of more than one line, over 300 characters or with a
# control character panics in the target), a slow input or a large
# allocation is saved under fuzz/artifacts/<target>/ and makes the script
# exit 1 after the other targets ran. Reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -O <target> fuzz/artifacts/<target>/<file>
# FUZZ_SANITIZER=none builds without AddressSanitizer (faster to build and
# run; what CI uses: the code is safe Rust, and panics are caught either way).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
sanitizer=(--sanitizer "${FUZZ_SANITIZER:-address}")
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fuzz build -O "${sanitizer[@]}"
failed=()
for t in $(cargo fuzz list); do
    mkdir -p "work/$t"
    echo "== $t: ${secs} s"
    # -malloc_limit_mb: any single allocation above 256 MiB on these small
    # inputs is a failure (readers must stay proportional to the input);
    # -timeout: one input may take at most 10 s.
    if ! cargo fuzz run -O "${sanitizer[@]}" "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 \
        -max_len=65536 -print_final_stats=1 2>"work/$t.log"; then
        failed+=("$t")
        tail -40 "work/$t.log"
    fi
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "work/$t.log" | tr '\n' ' '
    echo
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets that failed: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "all fuzz targets ran ${secs} s each without a failure"
