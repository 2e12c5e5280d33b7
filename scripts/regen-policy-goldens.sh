#!/usr/bin/env bash
# Regenerates policies/schema.json and the expected errors beside each bad policy in
# policies/invalid/. Review the diff: a changed message is a user-visible change.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p tollgate-engine --bin tollgate-policy
bin=target/debug/tollgate-policy
"$bin" schema > policies/schema.json
for f in policies/invalid/*.yaml policies/invalid/*.json; do
  "$bin" check "$f" 2>&1 | sed "s|^$f: ||" > "$f.err" || true
done
git diff --stat -- policies/ || true
