#!/usr/bin/env bash
# Installs redis-server for the sidecar's --redis tests. Idempotent: does nothing when
# redis-server is already on PATH. Needs root (apt-get); CI runs as root.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "redis-server present: $(redis-server --version)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# A fresh machine has no package lists: without them install finds nothing.
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server; then
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
fi

# The Debian package may start a system service on 6379; the tests use their own
# ports and processes, so it is left alone.
redis-server --version
