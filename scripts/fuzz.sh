#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and fails if one finds a crash.
#
#   scripts/fuzz.sh [SECONDS]     SECONDS per target, default 20
#
# The committed corpus (fuzz/corpus/<target>/) seeds each run and is left untouched: inputs the
# fuzzer finds go to a temporary directory. A crashing input is kept in fuzz/artifacts/<target>/
# and its path printed; replay it with `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz
# <target> <file>`. Honours CARGO_TARGET_DIR (instrumented builds go to its
# x86_64-unknown-linux-gnu/ subdirectory, apart from ordinary builds).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-20}
# The cargo-fuzz release known to build with the workspace's fixed toolchain (rustc 1.95).
CARGO_FUZZ_VERSION=0.13.2
# A single input taking longer than this is reported as a hang (a crash).
INPUT_TIMEOUT_SECONDS=10
# Memory a run may use before libFuzzer reports it (the largest legitimate frame is 32 MiB).
RSS_LIMIT_MB=2048

if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# cargo-fuzz passes nightly-only flags (-Zsanitizer=address, sanitizer coverage); the only
# toolchain here is stable, which accepts them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
cargo fuzz build --fuzz-dir fuzz

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failed=()
for target in $(cargo fuzz list --fuzz-dir fuzz); do
  mkdir -p "$WORK/$target"
  log="$WORK/$target.log"
  if cargo fuzz run --fuzz-dir fuzz "$target" "$WORK/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout="$INPUT_TIMEOUT_SECONDS" \
    -rss_limit_mb="$RSS_LIMIT_MB" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz: $target: ok, ${runs:-?} inputs in ${SECONDS_PER_TARGET}s"
  else
    echo "fuzz: $target: FAILED:" >&2
    grep -E "panicked at|SUMMARY|Test unit written|Failing input|deadly signal|timeout|out-of-memory" "$log" >&2 || tail -n 40 "$log" >&2
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failing targets: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
