#!/usr/bin/env bash
# End-to-end OTLP tests: real OpenTelemetry clients (the SDK with the OTLP HTTP and gRPC
# exporters, OpenInference's and OpenLLMetry's openai instrumentations) against a real server.
#
#   TRACELLM_BIN        server binary (default: <repo>/target/debug/tracellm)
#   TRACELLM_OTLP_VENV  virtualenv to create or reuse (default: <repo>/.venv-otlp)
#   PYTHON              interpreter used to create the venv (default: python3)
#
# Extra arguments go to pytest, e.g. `tests/otlp-python/test.sh -k grpc -x`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${TRACELLM_OTLP_VENV:-$REPO/.venv-otlp}"
PYTHON="${PYTHON:-python3}"

export TRACELLM_BIN="${TRACELLM_BIN:-$REPO/target/debug/tracellm}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "tests/otlp-python: creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi

# Install only when requirements.txt changed since the last install into this venv.
STAMP="$VENV/.tracellm-otlp-install"
WANT="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "tests/otlp-python: installing requirements.txt"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
    echo "$WANT" > "$STAMP"
fi

if [ ! -x "$TRACELLM_BIN" ]; then
    echo "tests/otlp-python: server binary $TRACELLM_BIN not found; build it with 'cargo build -p tracellm-cli' or set TRACELLM_BIN" >&2
    exit 1
fi

cd "$HERE"
exec "$VENV/bin/python" -m pytest "$@"
