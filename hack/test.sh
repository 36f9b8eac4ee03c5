#!/usr/bin/env bash
# The whole test suite, from a fresh machine: provisions the real components (cached), installs
# the Python environment (cached), then runs pytest. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
t0=$SECONDS
SERIN_BIN="$(bash "$SERIN_ROOT/hack/provision.sh")"
export SERIN_BIN
PY="$(bash "$SERIN_ROOT/hack/venv.sh")"
# Serin's images for the cluster tier, built from the project's Dockerfiles (cached by content).
# Separate steps, not `a && b`: set -e must stop the run when the build fails.
SERIN_IMAGES="$SERIN_CACHE/images/built.txt"
mkdir -p "$(dirname "$SERIN_IMAGES")"
bash "$SERIN_ROOT/hack/images.sh" > "$SERIN_IMAGES.tmp"
mv "$SERIN_IMAGES.tmp" "$SERIN_IMAGES"
export SERIN_IMAGES
log "provisioned in $((SECONDS - t0))s; running tests"
cd "$SERIN_ROOT"
export PATH="$SERIN_BIN:$(dirname "$PY"):$PATH"
exec "$PY" -m pytest "$@"
