#!/usr/bin/env bash
# JWT verification per algorithm inside wasm (wasmtime) and natively: jwt-simple's pure-Rust
# backend vs Tollgate's VerifyingKey. Builds the wasm guest, then runs the criterion bench.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --target wasm32-wasip1 -p tollgate-jwt-guest
cargo bench --locked -p tollgate-benches --bench jwt_wasm -- "$@"
