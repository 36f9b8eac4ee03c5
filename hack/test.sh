#!/usr/bin/env bash
# The whole test suite, from a fresh machine: provisions the real components (cached), installs
# the Python environment (cached), then runs pytest. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
t0=$SECONDS
SERIN_BIN="$(bash "$SERIN_ROOT/hack/provision.sh")"
export SERIN_BIN
PY="$(bash "$SERIN_ROOT/hack/venv.sh")"
log "provisioned in $((SECONDS - t0))s; running tests"
cd "$SERIN_ROOT"
export PATH="$SERIN_BIN:$(dirname "$PY"):$PATH"
exec "$PY" -m pytest "$@"
