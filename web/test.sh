#!/usr/bin/env bash
# Dashboard tests: unit tests (Vitest), the bundle drift check, and browser tests with
# Debian's Chromium against a real `tracellm start` (TRACELLM_BIN, default
# <repo>/target/debug/tracellm). Installs what it needs; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM_PATH:-}" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "web: installing Debian's chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "web: /usr/bin/chromium is missing and this is not root: install the chromium package" >&2
    exit 1
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "web: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

export TRACELLM_BIN="${TRACELLM_BIN:-$(cd .. && pwd)/target/debug/tracellm}"

status=0
echo "web: typecheck"
npx --no-install tsc --noEmit || status=1
echo "web: unit tests (vitest)"
npx --no-install vitest run || status=1
echo "web: bundle drift check"
node --test tests/drift.test.mjs || status=1
echo "web: browser tests against $TRACELLM_BIN"
node --test --test-concurrency=1 tests/browser.test.mjs tests/projects.test.mjs || status=1
exit $status
