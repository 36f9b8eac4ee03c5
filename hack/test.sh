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
# Two workers: most of the suite waits on real components (rollout steps, scrapes, Pods starting),
# not on the CPU: on 2 cores the suite took 47.5 minutes in two workers, about 85 in one. Each
# worker has its own control plane and Prometheus; the cluster tier (one real node on the host at a
# time) is one xdist_group, run whole by one worker. SERIN_TEST_WORKERS=0 runs in this process.
exec "$PY" -m pytest -n "${SERIN_TEST_WORKERS:-2}" --dist loadgroup "$@"
