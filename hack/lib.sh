# Shared settings for hack/ scripts. Source it; do not run it.
# Everything slow (Go binaries, the Python environment, Debian packages) lands under SERIN_CACHE,
# keyed by version, so a warm machine re-provisions in seconds and a cold one builds from registries.
set -euo pipefail
SERIN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERIN_CACHE="${SERIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/serin}"
export SERIN_ROOT SERIN_CACHE

# Pinned versions. The Kubernetes version is the one hack/tools/go.mod requires; etcd's is the one
# that Kubernetes release is tested with (its go.mod requires it), so both come from one module.
KUBE_VERSION="v1.35.4"
ETCD_VERSION="v3.6.5"
HELM_VERSION="v3.19.0"
# Prometheus from its Go module (v0.3NN.x is Prometheus 3.NN.x): Debian's package is built without
# Kubernetes service discovery ("field kubernetes_sd_configs not found in type config.ScrapeConfig").
PROMETHEUS_MODULE_VERSION="v0.316.0" PROMETHEUS_VERSION="3.16.0"
# KServe's controller and CRDs (Standard mode's spec.canary needs v0.20); Traefik as the Gateway API
# implementation (v3.7 does not build from the module proxy: 29 of its dependencies are refused) with
# the Gateway API CRDs of the version its go.mod requires.
KSERVE_VERSION="v0.20.0" TRAEFIK_VERSION="v3.6.12" GATEWAY_API_VERSION="v1.4.0"
export KUBE_VERSION ETCD_VERSION HELM_VERSION PROMETHEUS_MODULE_VERSION PROMETHEUS_VERSION
export KSERVE_VERSION TRAEFIK_VERSION GATEWAY_API_VERSION
# The S3 server of the local platform and the tests: versitygw, an Apache-2.0 S3 gateway over a plain
# folder (MinIO and Garage are AGPL; moto is a mock, not a server).
VERSITYGW_VERSION="v1.8.0"
export VERSITYGW_VERSION

# BUILD_REV changes whenever the way the binaries are built changes (r2: version ldflags), so a warm
# cache never serves binaries from an older recipe.
BUILD_REV="r2"
SERIN_BIN="$SERIN_CACHE/bin/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-$BUILD_REV"
SERIN_VENV="$SERIN_CACHE/venv-py311"
# Each in a directory of its own, keyed by version: the binary and the module files used with it.
SERIN_KSERVE_HOME="$SERIN_CACHE/bin/kserve-$KSERVE_VERSION"
SERIN_GATEWAY_HOME="$SERIN_CACHE/bin/traefik-$TRAEFIK_VERSION-gateway-api-$GATEWAY_API_VERSION"
SERIN_S3_HOME="$SERIN_CACHE/bin/versitygw-$VERSITYGW_VERSION"
export SERIN_BIN SERIN_VENV SERIN_KSERVE_HOME SERIN_GATEWAY_HOME SERIN_S3_HOME

log() { printf '[serin %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
