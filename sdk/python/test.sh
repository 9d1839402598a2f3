#!/usr/bin/env bash
# Runs the Python SDK's tests against a real TraceLLM server.
#
#   TRACELLM_BIN   server binary (default: <repo>/target/debug/tracellm)
#   TRACELLM_VENV  virtualenv to create or reuse (default: <repo>/.venv)
#   PYTHON         interpreter used to create the venv (default: python3)
#
# Extra arguments go to pytest, e.g. `sdk/python/test.sh -k openai -x`.
set -euo pipefail

SDK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SDK_DIR/../.." && pwd)"
VENV="${TRACELLM_VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-python3}"

export TRACELLM_BIN="${TRACELLM_BIN:-$REPO/target/debug/tracellm}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "sdk/python: creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the package's dependencies may have changed.
STAMP="$VENV/.tracellm-sdk-install"
WANT="$(cat "$SDK_DIR/pyproject.toml" | sha256sum | cut -d' ' -f1) $SDK_DIR"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ] || ! "$VENV/bin/python" -c "import tracellm, pytest, openai, langchain_core" 2>/dev/null; then
    echo "sdk/python: installing the SDK (editable) with its test extras"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$SDK_DIR[test]"
    echo "$WANT" > "$STAMP"
fi

if [ ! -x "$TRACELLM_BIN" ]; then
    echo "sdk/python: server binary $TRACELLM_BIN not found; build it with 'cargo build -p tracellm-cli' or set TRACELLM_BIN" >&2
    exit 1
fi

cd "$SDK_DIR"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@" tests
