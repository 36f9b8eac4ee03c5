#!/usr/bin/env bash
# Creates (or refreshes) Serin's Python environment under $SERIN_CACHE and installs this checkout
# into it, editable, with the test extras. Prints the venv's python on stdout.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="${SERIN_PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
stamp="$SERIN_VENV/.serin-stamp"
want="$(cat "$SERIN_ROOT/pyproject.toml" | sha256sum | cut -c1-16) $SERIN_ROOT"

if [[ ! -x "$SERIN_VENV/bin/python" ]]; then
  log "creating $SERIN_VENV with $($PY --version)"
  "$PY" -m venv "$SERIN_VENV"
  "$SERIN_VENV/bin/python" -m pip install -q -U pip setuptools wheel
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  log "installing serin[test] into $SERIN_VENV (first time: a few minutes)"
  # Wheels only for the numeric stack: a source build of scikit-learn or numpy would take an hour.
  "$SERIN_VENV/bin/python" -m pip install -q \
    --only-binary=numpy,scipy,scikit-learn,pandas,onnxruntime,onnx,lightgbm,xgboost-cpu,matplotlib,grpcio \
    -e "$SERIN_ROOT[test]"
  echo "$want" > "$stamp"
fi
echo "$SERIN_VENV/bin/python"
