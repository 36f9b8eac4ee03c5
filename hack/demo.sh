#!/usr/bin/env bash
# The main job on a fresh machine, as root: provision the real components (cached), build Serin's
# images (cached by content), then bring up a real node with KServe's own controller in Standard
# mode, Traefik as the Gateway and Serin installed by Helm, and run the demo rollout on it
# (v1 served, v2 promoted through exact canary weights, v3 rolled back); the platform is torn down
# at the end. `bash hack/demo.sh --standin` runs it on the KServe stand-in (Knative mode, no node,
# no root) instead, and leaves that platform running. Other arguments go to `serin demo`.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SERIN_BIN="$(bash "$SERIN_ROOT/hack/provision.sh")"
export SERIN_BIN
PY="$(bash "$SERIN_ROOT/hack/venv.sh")"
export PATH="$SERIN_BIN:$(dirname "$PY"):$PATH"
args=("$@") mode=(--cluster)
for i in "${!args[@]}"; do
  if [[ "${args[$i]}" == "--standin" ]]; then mode=(); unset 'args[i]'; fi
done
if [[ ${#mode[@]} -gt 0 ]]; then
  SERIN_IMAGES="$SERIN_CACHE/images/built.txt"
  mkdir -p "$(dirname "$SERIN_IMAGES")"
  bash "$SERIN_ROOT/hack/images.sh" > "$SERIN_IMAGES.tmp"
  mv "$SERIN_IMAGES.tmp" "$SERIN_IMAGES"
  export SERIN_IMAGES
fi
exec "$(dirname "$PY")/serin" demo "${mode[@]}" "${args[@]}"
