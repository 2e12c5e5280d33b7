#!/usr/bin/env bash
# Runs every fuzz target for a set time: scripts/fuzz.sh [SECONDS_PER_TARGET] (default 60).
# libFuzzer needs nightly; cargo-fuzz is installed on first use. Crashes land in
# fuzz/artifacts/<target>/: minimise them (cargo fuzz tmin), copy them to
# fuzz/regressions/<target>/ and fix the bug — the regression test replays them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked
cd fuzz
for target in $(cargo +nightly fuzz list); do
  echo "== fuzzing $target for ${secs}s"
  mkdir -p "corpus/$target"
  cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=4096
done
