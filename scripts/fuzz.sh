#!/usr/bin/env bash
# Builds berth's cargo-fuzz targets (fuzz/) and runs each for a bounded time,
# one after the other; fails if any target crashes, hangs or runs out of
# memory. Prints a table of what ran. See docs/fuzzing.md.
#
# Usage: scripts/fuzz.sh [seconds-per-target] [target...]
#   seconds-per-target: default 60. target: default every target in fuzz/.
# Environment:
#   FUZZ_SANITIZER  address (default) or none
#   FUZZ_JOBS_DIR   where the grown corpora go (default fuzz/target/corpus;
#                   the committed seeds in fuzz/corpus/<target> are only read)
#
# Needs root: the unpack_layer target creates whiteouts (device nodes) and
# trusted.* xattrs, as unpacking does in berthd.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
secs=${1:-60}
shift || true
sanitizer=${FUZZ_SANITIZER:-address}
jobs_dir=${FUZZ_JOBS_DIR:-fuzz/target/corpus}
mkdir -p "$jobs_dir"
jobs_dir=$(cd "$jobs_dir" && pwd)

# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module);
# the stable toolchain accepts them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1

# libfuzzer-sys compiles libFuzzer (C++).
if ! command -v c++ >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "fuzz: no C++ compiler (libFuzzer needs one): install g++" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

cd fuzz
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build --sanitizer "$sanitizer"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
rows=()
failed=0
for t in "${targets[@]}"; do
  work="$jobs_dir/$t"
  mkdir -p "$work" "artifacts/$t"
  echo "fuzz: $t for ${secs}s"
  status=ok
  # -timeout: one input taking longer counts as a hang (a failure).
  if ! cargo fuzz run --sanitizer "$sanitizer" "$t" "$work" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$logs/$t" 2>&1; then
    status=FAILED
    failed=1
    echo "fuzz: $t failed:" >&2
    grep -E -A4 "^(==[0-9]+==ERROR|thread '.*' panicked)" "$logs/$t" | head -30 >&2 || true
    grep -E "^(SUMMARY|ALARM|MS:|artifact_prefix)" "$logs/$t" | head -10 >&2 || true
  fi
  final_stat() { grep -oP "^stat::$1:\s*\K[0-9]+" "$logs/$t" | tail -1 || true; }
  execs=$(final_stat number_of_executed_units)
  rate=$(final_stat average_exec_per_sec)
  cov=$(grep -oP '\bcov: \K[0-9]+' "$logs/$t" | tail -1 || true)
  corp=$(grep -oP '\bcorp: \K[0-9]+' "$logs/$t" | tail -1 || true)
  rows+=("$(printf '%-16s %6s %12s %8s %6s %7s  %s' "$t" "$secs" "${execs:-?}" "${rate:-?}" \
    "${cov:-?}" "${corp:-?}" "$status")")
done

# unpack_layer's scratch directories (one per process), unless still in use
for d in /tmp/berth-fuzz-unpack-*; do
  [ -d "$d" ] && ! kill -0 "${d##*-}" 2>/dev/null && rm -rf "$d"
done

echo
printf '%-16s %6s %12s %8s %6s %7s  %s\n' target seconds executions exec/s cov corpus result
printf '%s\n' "${rows[@]}"
echo "(sanitizer: $sanitizer; grown corpora in $jobs_dir; crash inputs in fuzz/artifacts/<target>/)"
exit $failed
