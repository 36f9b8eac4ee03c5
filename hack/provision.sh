#!/usr/bin/env bash
# Installs the real components Serin's tests and local platform run, at pinned versions, into
# $SERIN_CACHE (reused between runs):
#   kube-apiserver, kube-controller-manager, kubectl  Go builds of k8s.io/kubernetes (hack/tools/go.mod)
#   kubelet, kube-scheduler, kube-proxy              the node, from the same module
#   etcd                                             Go build of go.etcd.io/etcd/server/v3 (same module)
#   pause                                            the Pod sandbox, hack/tools/pause (static)
#   helm                                             go install helm.sh/helm/v3/cmd/helm
#   prometheus, promtool                             go install github.com/prometheus/prometheus/cmd/…
#   KServe's manager, CRDs, webhooks, config    github.com/kserve/kserve (own module dir)   -> $SERIN_KSERVE_HOME
#   traefik, Gateway API CRDs                   github.com/traefik/traefik/v3, sigs.k8s.io/gateway-api -> $SERIN_GATEWAY_HOME
#   versitygw (the S3 server)                   go install github.com/versity/versitygw/cmd/versitygw -> $SERIN_S3_HOME
#   runc, containerd, CNI plugins, iptables, conntrack, buildah, debootstrap   Debian packages (the node, images)
#   prometheus-alertmanager (0.25), amtool       Debian package -> /usr/bin (the alerting tier)
# Prints the bin directory on stdout. Cold: ~30 min on 2 cores, nearly all of it Go compiling (no
# release binary can be downloaded here; docs/cluster.md has the parts). Warm: well under a second.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_go() {
  command -v go >/dev/null || { log "Go is required to build kube-apiserver (install golang)"; exit 1; }
}

build_kube() {
  local want=(kube-apiserver kube-controller-manager kubectl etcd kubelet kube-scheduler kube-proxy) missing=()
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

build_pause() {
  [[ -x "$SERIN_BIN/pause" ]] && return
  need_go
  # Static: it is the only file in its image.
  (cd "$SERIN_ROOT/hack/tools" && CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local \
     go build -trimpath -ldflags='-s -w' -o "$SERIN_BIN/pause" ./pause)
}

build_helm() {
  [[ -x "$SERIN_BIN/helm" ]] && return
  need_go
  log "building helm $HELM_VERSION"
  GOBIN="$SERIN_BIN" GOFLAGS=-mod=mod GOTOOLCHAIN=local go install -trimpath -ldflags='-s -w' \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

apt_install() {  # PACKAGE... (Debian packages, installed when a command they bring is missing)
  if [[ $(id -u) -eq 0 ]]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  # Package scripts try to start services; there is no init system here, and that is fine.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_node_packages() {
  local missing=() cmd
  for cmd in runc containerd ctr iptables nft conntrack buildah debootstrap; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
  done
  [[ -x /usr/lib/cni/bridge ]] || missing+=(cni)
  [[ ${#missing[@]} -eq 0 ]] && return
  log "installing Debian packages for the node and images (missing: ${missing[*]})"
  apt_install runc containerd containernetworking-plugins iptables nftables conntrack buildah debootstrap
}

# Only the service discoveries Serin uses (file, static and http stay in every build): Prometheus'
# documented build tags. The other 25 (AWS, Azure, GCE, ... SDKs) were half of its cold build.
PROMETHEUS_TAGS="remove_all_sd,enable_kubernetes_sd"

build_prometheus() {
  # Checked for version and build tags, not only presence (an older cache holds a link to Debian's
  # prometheus, or a build with every discovery, here).
  if [[ ! -L "$SERIN_BIN/prometheus" && -x "$SERIN_BIN/promtool" ]] \
     && "$SERIN_BIN/prometheus" --version 2>/dev/null | grep -q "version $PROMETHEUS_VERSION " \
     && go version -m "$SERIN_BIN/prometheus" 2>/dev/null | grep -q -- "-tags=$PROMETHEUS_TAGS\$"; then
    return
  fi
  need_go
  log "building prometheus $PROMETHEUS_VERSION and promtool (service discovery: file, http, kubernetes)"
  rm -f "$SERIN_BIN/prometheus" "$SERIN_BIN/promtool"
  GOBIN="$SERIN_BIN" GOFLAGS=-mod=mod GOTOOLCHAIN=local go install -trimpath -tags "$PROMETHEUS_TAGS" \
    -ldflags="-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION"
}

module_dir() {  # MODULE@VERSION: downloads it (module proxy) and prints its directory in the module cache
  GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

build_kserve() {
  # Built inside KServe's own module directory, so its go.mod, go.sum and `replace` lines apply as
  # KServe's CI has them (from a module of ours the replaces are ignored and the build fails on a
  # controller-runtime API mismatch). The CRDs, webhook configurations and ConfigMap the controller
  # is released with are kept next to it.
  [[ -x "$SERIN_KSERVE_HOME/manager" && -f "$SERIN_KSERVE_HOME/config/configmap/inferenceservice.yaml" ]] && return
  need_go
  log "building KServe's controller $KSERVE_VERSION (about 5 min cold on 2 cores)"
  local dir; dir="$(module_dir "github.com/kserve/kserve@$KSERVE_VERSION")"
  rm -rf "$SERIN_KSERVE_HOME.tmp"; mkdir -p "$SERIN_KSERVE_HOME.tmp/config"
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local \
     go build -trimpath -ldflags='-s -w' -o "$SERIN_KSERVE_HOME.tmp/manager" ./cmd/manager)
  cp -r "$dir/config/crd" "$dir/config/webhook" "$dir/config/configmap" "$SERIN_KSERVE_HOME.tmp/config/"
  chmod -R u+w "$SERIN_KSERVE_HOME.tmp"
  rm -rf "$SERIN_KSERVE_HOME"; mv "$SERIN_KSERVE_HOME.tmp" "$SERIN_KSERVE_HOME"
}

build_gateway() {
  # Run from Traefik's own module directory for the same reason (its `replace` of
  # traefik/dynamic/ext only resolves there).
  [[ -x "$SERIN_GATEWAY_HOME/traefik" && -d "$SERIN_GATEWAY_HOME/crds" ]] && return
  need_go
  log "building Traefik $TRAEFIK_VERSION (about 6 min cold on 2 cores)"
  local dir crds; dir="$(module_dir "github.com/traefik/traefik/v3@$TRAEFIK_VERSION")"
  crds="$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")/config/crd/standard"
  rm -rf "$SERIN_GATEWAY_HOME.tmp"; mkdir -p "$SERIN_GATEWAY_HOME.tmp/crds"
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local \
     go build -trimpath -ldflags='-s -w' -o "$SERIN_GATEWAY_HOME.tmp/traefik" ./cmd/traefik)
  cp "$crds"/*.yaml "$SERIN_GATEWAY_HOME.tmp/crds/"
  chmod -R u+w "$SERIN_GATEWAY_HOME.tmp"
  rm -rf "$SERIN_GATEWAY_HOME"; mv "$SERIN_GATEWAY_HOME.tmp" "$SERIN_GATEWAY_HOME"
}

# Alertmanager from Debian (the Go module proxy serves it too, but the package is a second instead
# of minutes of compiling). Its package scripts try to start a service: no init here, and that is
# fine; nothing runs until a test starts it with its own configuration.
install_alertmanager() {
  [[ -x /usr/bin/prometheus-alertmanager ]] && return
  log "installing Debian's prometheus-alertmanager"
  apt_install prometheus-alertmanager
}

build_s3() {
  [[ -x "$SERIN_S3_HOME/versitygw" ]] && return
  need_go
  log "building versitygw $VERSITYGW_VERSION, the S3 server (about 1 min cold)"
  rm -rf "$SERIN_S3_HOME.tmp"; mkdir -p "$SERIN_S3_HOME.tmp"
  GOBIN="$SERIN_S3_HOME.tmp" GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 go install -trimpath -ldflags='-s -w' \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  rm -rf "$SERIN_S3_HOME"; mv "$SERIN_S3_HOME.tmp" "$SERIN_S3_HOME"
}

mkdir -p "$SERIN_BIN"
build_kube
build_pause
build_helm
build_prometheus
install_node_packages
build_kserve
build_gateway
build_s3
install_alertmanager
for b in kube-apiserver kube-controller-manager kubectl etcd kubelet kube-scheduler kube-proxy pause helm \
         prometheus promtool; do
  [[ -x "$SERIN_BIN/$b" ]] || { log "missing $SERIN_BIN/$b after provisioning"; exit 1; }
done
for b in "$SERIN_KSERVE_HOME/manager" "$SERIN_GATEWAY_HOME/traefik" "$SERIN_S3_HOME/versitygw" \
         /usr/bin/prometheus-alertmanager; do
  [[ -x "$b" ]] || { log "missing $b after provisioning"; exit 1; }
done
echo "$SERIN_BIN"
