#!/usr/bin/env bash
# The main job on a fresh machine: provision the real components (cached), install Serin, bring up
# the local platform and run the demo rollout. Extra arguments go to `serin demo`.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SERIN_BIN="$(bash "$SERIN_ROOT/hack/provision.sh")"
export SERIN_BIN
PY="$(bash "$SERIN_ROOT/hack/venv.sh")"
export PATH="$SERIN_BIN:$(dirname "$PY"):$PATH"
exec "$(dirname "$PY")/serin" demo "$@"
