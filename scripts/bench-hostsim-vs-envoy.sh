#!/usr/bin/env bash
# Throughput of `tollgate-sim serve` next to real Envoy 1.40, same machine, same load generator,
# same no-op probe filter (host-sim/probes, plugin config `noop`), same bootstrap shape, same
# origin (examples' demo-origin), loopback only. Rounds are interleaved (envoy, host-sim, envoy,
# ...) so that background load hits both alike; the medians and their ratio are printed.
# Then `cargo bench -p tollgate-sim --bench replay` (in-process per-request overhead).
#
# Usage: scripts/bench-hostsim-vs-envoy.sh [seconds per run, default 10] [rounds, default 3]
# Needs: wrk (apt-get install wrk), scripts/install-envoy.sh. Env: CONNECTIONS (default 16),
# THREADS (wrk threads, default 2), WORKERS (Envoy --concurrency / host-sim --workers, default 2),
# SKIP_BUILD=1 to use the built artifacts as they are, SKIP_CRITERION=1 to skip the cargo bench.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${1:-10}
ROUNDS=${2:-3}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ENVOY=${TOLLGATE_ENVOY:-$ROOT/.venv/bin/envoy}

command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
[ -x "$ENVOY" ] || { echo "no Envoy at $ENVOY: run scripts/install-envoy.sh" >&2; exit 2; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "building the probe (.wasm), tollgate-sim and demo-origin (release)..." >&2
  cargo build -q -p tollgate-probe --target wasm32-wasip1 --release
  cargo build -q --release -p tollgate-sim --bin tollgate-sim -p tollgate-examples --bin demo-origin
fi
WASM=$TARGET/wasm32-wasip1/release/tollgate_probe.wasm

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ORIGIN_PORT=$(free_port)
ENVOY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
SIM_PORT=$(free_port)

# One bootstrap; host-sim gets the same file with its own listener port.
render() { # listen_port
  cat <<EOF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $ADMIN_PORT } }
static_resources:
  listeners:
    - name: bench
      address: { socket_address: { address: 127.0.0.1, port_value: $1 } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bench
                route_config:
                  name: bench
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: { prefix: "/" }
                          route: { cluster: origin, timeout: 15s }
                http_filters:
                  - name: envoy.filters.http.wasm
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: bench
                        root_id: bench
                        vm_config:
                          vm_id: bench
                          runtime: envoy.wasm.runtime.v8
                          code: { local: { filename: "$WASM" } }
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: noop
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: origin
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: origin
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $ORIGIN_PORT } } }
EOF
}
render "$ENVOY_PORT" >"$WORK/envoy.yaml"
render "$SIM_PORT" >"$WORK/sim.yaml"

"$TARGET/release/demo-origin" --listen "127.0.0.1:$ORIGIN_PORT" --name origin >/dev/null 2>&1 &
PIDS+=($!)
# The probe logs every callback; both hosts write those lines to a file.
"$ENVOY" -c "$WORK/envoy.yaml" --concurrency "$WORKERS" -l info --base-id "$ADMIN_PORT" \
  >"$WORK/envoy.log" 2>&1 &
PIDS+=($!)
"$TARGET/release/tollgate-sim" serve --config "$WORK/sim.yaml" --workers "$WORKERS" \
  >"$WORK/sim.log" 2>&1 &
PIDS+=($!)

wait_up() { # port
  for _ in $(seq 1 300); do
    if curl -fs -o /dev/null "http://127.0.0.1:$1/ready-check"; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers on port $1" >&2
  tail -20 "$WORK/envoy.log" "$WORK/sim.log" >&2
  exit 1
}
wait_up "$ENVOY_PORT"
wait_up "$SIM_PORT"

run() { # name port -> requests/s and p50 latency
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$2/v1/bench")
  local rps p50 errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx or 3xx responses:|Socket errors:/' <<<"$out")
  echo "$1 rps=$rps p50=$p50 ${errors:+($errors)}" >&2
  echo "$1 $rps $p50"
}

echo "warm-up (2 s each)..." >&2
wrk -t1 -c4 -d2s "http://127.0.0.1:$ENVOY_PORT/v1/bench" >/dev/null
wrk -t1 -c4 -d2s "http://127.0.0.1:$SIM_PORT/v1/bench" >/dev/null

RESULTS=$WORK/results
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  run envoy "$ENVOY_PORT" >>"$RESULTS"
  run host-sim "$SIM_PORT" >>"$RESULTS"
done

median() { sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
E=$(awk '$1 == "envoy" {print $2}' "$RESULTS" | median)
S=$(awk '$1 == "host-sim" {print $2}' "$RESULTS" | median)
echo
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS interleaved rounds, $WORKERS workers each, $(nproc) CPUs"
echo "envoy    median req/s: $E   (runs: $(awk '$1 == "envoy" {printf "%s/%s ", $2, $3}' "$RESULTS"))"
echo "host-sim median req/s: $S   (runs: $(awk '$1 == "host-sim" {printf "%s/%s ", $2, $3}' "$RESULTS"))"
echo "host-sim / envoy: $(awk -v s="$S" -v e="$E" 'BEGIN {printf "%.2f", s / e}')"

if [ "${SKIP_CRITERION:-0}" != 1 ]; then
  echo
  echo "cargo bench -p tollgate-sim --bench replay (in-process, stub upstream):"
  cargo bench -q -p tollgate-sim --bench replay -- --noplot 2>&1 | grep -E "time:|thrpt:|noop_probe" || true
fi
