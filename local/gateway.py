"""A Gateway API implementation on the local cluster: Traefik (built by hack/provision.sh) with its
Kubernetes Gateway provider, running on the host like KServe's manager, authenticating as a
ServiceAccount with the RBAC Traefik documents for that provider. It reads EndpointSlices and
sends to Pod IPs directly (the host routes the Pod network to the node), and honours weighted
`backendRefs` exactly.

What it installs: the Gateway API standard-channel CRDs of the version Traefik was built with,
the GatewayClass `traefik`, and one Gateway, `serin-gateway/serin`, whose HTTP listener `web`
is Traefik's entryPoint on 127.0.0.1:PORT (a listener's port must equal its entryPoint's, else
Traefik reports PortUnavailable). Serin's operator is pointed at it with SERIN_GATEWAY.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serin.local.controlplane import REPO_ROOT, ControlPlane, ControlPlaneError, _Proc, free_port, provisioned_home

NAMESPACE, GATEWAY, LISTENER, CLASS = "serin-gateway", "serin", "web", "traefik"
SERVICE_ACCOUNT = "traefik"
# Traefik v3.6's docs/content/reference/dynamic-configuration/kubernetes-gateway-rbac.yml (rules verbatim).
RBAC_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["services", "secrets", "configmaps"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    {"apiGroups": ["gateway.networking.k8s.io"], "verbs": ["get", "list", "watch"], "resources": [
        "gatewayclasses", "gateways", "httproutes", "grpcroutes", "tcproutes", "tlsroutes", "referencegrants",
        "backendtlspolicies"]},
    {"apiGroups": ["gateway.networking.k8s.io"], "verbs": ["update"], "resources": [
        "gatewayclasses/status", "gateways/status", "httproutes/status", "grpcroutes/status", "tcproutes/status",
        "tlsroutes/status", "referencegrants/status", "backendtlspolicies/status"]},
]


def gateway_dir(root: Path = REPO_ROOT) -> Path:
    """Where hack/provision.sh put traefik and the Gateway API CRDs ($SERIN_GATEWAY_HOME)."""
    return provisioned_home("SERIN_GATEWAY_HOME", "traefik", root)


@dataclass
class Gateway:
    control_plane: ControlPlane
    workdir: Path
    home: Path
    port: int = field(default_factory=free_port)  # the listener: HTTP on 127.0.0.1
    ping_port: int = field(default_factory=free_port)
    # Traefik batches provider updates for 2 s by default; a weight step then waits for it.
    throttle: str = "100ms"
    _proc: _Proc | None = None

    @property
    def metrics_target(self) -> str:
        """Where Prometheus scrapes Traefik's metrics (`/metrics` on the internal entryPoint)."""
        return f"127.0.0.1:{self.ping_port}"

    @property
    def setting(self) -> str:
        """The operator's SERIN_GATEWAY for this Gateway."""
        return f"{NAMESPACE}/{GATEWAY}/{LISTENER}"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def install(self, timeout: float = 60.0) -> None:
        cp = self.control_plane
        self.workdir.mkdir(parents=True, exist_ok=True)
        for crd in sorted((self.home / "crds").glob("*.yaml")):
            cp.kubectl("apply", "--server-side", "-f", str(crd))
        cp.wait_established([f"{p}.gateway.networking.k8s.io" for p in ("gatewayclasses", "gateways", "httproutes",
                                                                         "referencegrants")], timeout)
        cp.kubectl("create", "namespace", NAMESPACE, check=False)
        cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "serin-traefik"},
             "rules": RBAC_RULES},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "serin-traefik"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "serin-traefik"},
             "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": CLASS},
             "spec": {"controllerName": "traefik.io/gateway-controller"}},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
             "metadata": {"name": GATEWAY, "namespace": NAMESPACE},
             "spec": {"gatewayClassName": CLASS, "listeners": [
                 {"name": LISTENER, "protocol": "HTTP", "port": self.port,
                  "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
        ]}))
        token = cp.kubectl("create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=24h").stdout.strip()
        (self.workdir / "token").write_text(token)
        (self.workdir / "token").chmod(0o600)
        self.start(timeout)
        self._wait_programmed(timeout)

    def start(self, timeout: float = 60.0) -> None:
        cp = self.control_plane
        argv = [
            str(self.home / "traefik"), "--log.level=INFO", "--log.nocolor=true",
            "--global.checknewversion=false", "--global.sendanonymoususage=false",
            f"--entryPoints.{LISTENER}.address=127.0.0.1:{self.port}",
            f"--entryPoints.traefik.address=127.0.0.1:{self.ping_port}", "--ping=true",
            # Its request counters per backend on the same internal entryPoint (/metrics): what
            # the builtin gatewayErrorRate reads (operator/gateway_metrics.py).
            "--metrics.prometheus=true", "--metrics.prometheus.entryPoint=traefik",
            "--api=false", "--providers.kubernetesgateway=true",
            f"--providers.kubernetesgateway.endpoint={cp.server}",
            f"--providers.kubernetesgateway.certauthfilepath={cp.pki.ca_cert}",
            f"--providers.kubernetesgateway.token={self.workdir / 'token'}",
            "--providers.kubernetesgateway.statusaddress.ip=127.0.0.1",
            f"--providers.providersthrottleduration={self.throttle}",
        ]
        # Not the caller's cluster: Traefik would prefer in-cluster settings or KUBECONFIG to the flags.
        env = {k: "" for k in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}
        self._proc = _Proc("traefik", argv, self.workdir / "traefik.log", env=env)
        self._proc.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._proc.alive():
                raise ControlPlaneError(f"traefik exited:\n{self._proc.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ping_port}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise ControlPlaneError(f"traefik not answering /ping after {timeout}s:\n{self._proc.tail()}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()

    def log(self, lines: int = 60) -> str:
        return self._proc.tail(lines) if self._proc is not None else ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _wait_programmed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.control_plane.kubectl("get", "gateway", GATEWAY, "-n", NAMESPACE, "-o", "json", check=False)
            if out.returncode == 0:
                status = json.loads(out.stdout).get("status") or {}
                conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
                if conds.get("Programmed") == "True":
                    return
            time.sleep(0.3)
        raise ControlPlaneError(f"Gateway {NAMESPACE}/{GATEWAY} not Programmed after {timeout}s:\n{self.log()}")


def install_gateway(control_plane: ControlPlane, workdir: Path) -> Gateway:
    gw = Gateway(control_plane, workdir, gateway_dir())
    try:
        gw.install()
    except BaseException:
        gw.stop()
        raise
    return gw


__all__ = ["Gateway", "install_gateway"]
