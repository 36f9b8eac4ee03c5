#!/usr/bin/env bash
# Installs the real components Serin's tests and local platform run, at pinned versions, into
# $SERIN_CACHE (reused between runs):
#   kube-apiserver, kube-controller-manager, kubectl  Go builds of k8s.io/kubernetes (hack/tools/go.mod)
#   etcd                                             Go build of go.etcd.io/etcd/server/v3 (same module)
#   helm                                             go install helm.sh/helm/v3/cmd/helm
#   prometheus                                       Debian package
# Prints the bin directory on stdout. Cold: ~15-25 min on 2 cores. Warm: well under a second.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_go() {
  command -v go >/dev/null || { log "Go is required to build kube-apiserver (install golang)"; exit 1; }
}

build_kube() {
  local want=(kube-apiserver kube-controller-manager kubectl etcd) missing=()
  for b in "${want[@]}"; do [[ -x "$SERIN_BIN/$b" ]] || missing+=("$b"); done
  [[ ${#missing[@]} -eq 0 ]] && return
  need_go
  log "building ${missing[*]} ($KUBE_VERSION, etcd $ETCD_VERSION) with $(go version | awk '{print $3}'); cold builds take 15+ min"
  mkdir -p "$SERIN_BIN.tmp"
  local pkgs=()
  for b in "${missing[@]}"; do
    case "$b" in
      etcd) pkgs+=(./etcd) ;;
      *) pkgs+=("k8s.io/kubernetes/cmd/$b") ;;
    esac
  done
  # Stamp the version the way Kubernetes' own hack/lib/version.sh does: an unstamped build reports
  # v0.0.0-master, which clients that check the server version (helm's kubeVersion) refuse.
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}" ldflags=(-s -w)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=(-X "$pkg.gitVersion=$KUBE_VERSION" -X "$pkg.gitMajor=1" -X "$pkg.gitMinor=$minor"
              -X "$pkg.gitTreeState=clean")
  done
  # GOFLAGS=-mod=readonly: go.sum in the repo is the pin; a build never rewrites it.
  (cd "$SERIN_ROOT/hack/tools" && GOFLAGS=-mod=readonly GOTOOLCHAIN=local \
     go build -trimpath -ldflags="${ldflags[*]}" -o "$SERIN_BIN.tmp/" "${pkgs[@]}")
  mkdir -p "$SERIN_BIN"
  mv "$SERIN_BIN.tmp"/* "$SERIN_BIN/"
  rmdir "$SERIN_BIN.tmp"
}

build_helm() {
  [[ -x "$SERIN_BIN/helm" ]] && return
  need_go
  log "building helm $HELM_VERSION"
  GOBIN="$SERIN_BIN" GOFLAGS=-mod=mod GOTOOLCHAIN=local go install -trimpath -ldflags='-s -w' \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

install_prometheus() {
  if [[ -x "$SERIN_BIN/prometheus" && -x "$SERIN_BIN/promtool" ]]; then return; fi
  local p
  p="$(command -v prometheus || true)"
  if [[ -z "$p" ]]; then
    log "installing Debian package prometheus"
    if [[ $(id -u) -eq 0 ]]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >/dev/null
    # The package's postinst tries to start a service; there is no init system here, and that is fine.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    p="$(command -v prometheus)"
  fi
  ln -sf "$p" "$SERIN_BIN/prometheus"
  ln -sf "$(dirname "$p")/promtool" "$SERIN_BIN/promtool"
}

mkdir -p "$SERIN_BIN"
build_kube
build_helm
install_prometheus
for b in kube-apiserver kube-controller-manager kubectl etcd helm prometheus promtool; do
  [[ -x "$SERIN_BIN/$b" ]] || { log "missing $SERIN_BIN/$b after provisioning"; exit 1; }
done
echo "$SERIN_BIN"
