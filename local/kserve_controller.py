"""KServe's own control plane on the local cluster: the controller (`cmd/manager` of
github.com/kserve/kserve, built by hack/provision.sh), its CRDs, its `inferenceservice-config`
ConfigMap and its webhooks, exactly as released, with three local choices:

- the manager runs on the host (not in a Pod), so its webhooks are registered by URL
  (https://127.0.0.1:PORT) with a certificate from the platform's PKI instead of a Service and
  cert-manager. It reads that certificate from $TMPDIR/k8s-webhook-server/serving-certs (no flag);
- the ConfigMap is the module's own, with the default deployment mode chosen here, ingress
  creation off (no Istio; Serin makes its own routes) and the default Pod resources lowered so
  that a stable and a canary fit on a 2-core node;
- the webhooks are registered only once the manager answers /readyz: they fail closed, and an
  InferenceService written before that would be refused.

Without the pod-mutating webhook KServe silently ignores `storageUri` (the Pod gets no model and
the InferenceService still says Ready), so the webhooks are not optional.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from serin.local.controlplane import REPO_ROOT, ControlPlane, ControlPlaneError, _Proc, free_port, provisioned_home
from serin.local.pki import issue_serving_cert

NAMESPACE = "kserve"
CONFIGMAP = "inferenceservice-config"
# The CRDs of the served APIs (LLMInferenceService and LocalModel have controllers of their own).
# ClusterStorageContainers too: the controller resolves every storageUri through them, and without
# the CRD it refuses all of them ("no matches for kind ClusterStorageContainer").
CRD_FILES = ("serving.kserve.io_inferenceservices.yaml", "serving.kserve.io_servingruntimes.yaml",
             "serving.kserve.io_clusterservingruntimes.yaml", "serving.kserve.io_inferencegraphs.yaml",
             "serving.kserve.io_trainedmodels.yaml",
             "clusterstoragecontainer/serving.kserve.io_clusterstoragecontainers.yaml")


def kserve_dir(root: Path = REPO_ROOT) -> Path:
    """Where hack/provision.sh put the manager and the module's config/ ($SERIN_KSERVE_HOME)."""
    return provisioned_home("SERIN_KSERVE_HOME", "manager", root)


def install_crds(control_plane: ControlPlane, timeout: float = 120.0) -> None:
    """KServe's released CRDs on a control plane with no KServe controller (the stand-in tiers,
    `serin dev`): every InferenceService Serin writes, and every status the stand-in writes, must
    then pass KServe's own schema, pruning included."""
    KServeController(control_plane, control_plane.workdir / "kserve", kserve_dir()).install_crds(timeout)


def configmap(module_config: Path, default_mode: str) -> dict[str, Any]:
    """The module's inferenceservice-config with the local choices (see the module docstring)."""
    doc = yaml.safe_load((module_config / "configmap" / "inferenceservice.yaml").read_text())
    data: dict[str, str] = {k: v for k, v in doc["data"].items() if not k.startswith("_")}  # _example is prose
    deploy = json.loads(data["deploy"])
    deploy["defaultDeploymentMode"] = default_mode
    ingress = json.loads(data["ingress"])
    ingress.update(disableIngressCreation=True, disableIstioVirtualHost=True)
    isvc = json.loads(data["inferenceService"])
    isvc["resource"] = {"cpuRequest": "50m", "cpuLimit": "1", "memoryRequest": "128Mi", "memoryLimit": "1Gi"}
    data.update(deploy=json.dumps(deploy), ingress=json.dumps(ingress), inferenceService=json.dumps(isvc))
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "namespace": NAMESPACE}, "data": data}


def webhook_configurations(module_config: Path, base_url: str, ca_bundle: bytes) -> list[dict[str, Any]]:
    """The module's webhook configurations, each Service reference replaced by a URL."""
    docs = [d for d in yaml.safe_load_all((module_config / "webhook" / "manifests.yaml").read_text()) if d]
    caBundle = base64.b64encode(ca_bundle).decode()
    for doc in docs:
        for hook in doc.get("webhooks") or []:
            path = hook["clientConfig"].pop("service")["path"]
            hook["clientConfig"] = {"url": f"{base_url}{path}", "caBundle": caBundle}
    return docs


@dataclass
class KServeController:
    control_plane: ControlPlane
    workdir: Path
    home: Path  # $SERIN_KSERVE: manager + config/
    default_mode: str = "Standard"
    webhook_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    _proc: _Proc | None = None
    started_in: dict[str, float] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.home / "config"

    def install_crds(self, timeout: float = 120.0) -> None:
        """KServe's CRDs alone: InferenceServices are then checked by KServe's real schema, and
        nothing acts on them (no manager, no webhooks)."""
        for name in CRD_FILES:
            # Server-side: the InferenceService CRD (2 MB) is too large for the last-applied annotation.
            self.control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                                       str(self.config / "crd" / "full" / name))
        self._wait_established(timeout)

    def install(self, timeout: float = 120.0) -> None:
        """CRDs, namespace, ConfigMap, the manager, then the webhooks."""
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        cp = self.control_plane
        self.install_crds(timeout)
        t1 = time.monotonic()
        cp.kubectl("create", "namespace", NAMESPACE, check=False)
        cp.kubectl("apply", "-f", "-", input=json.dumps(configmap(self.config, self.default_mode)))
        cert, key = issue_serving_cert(cp.pki, "kserve-webhook", "kserve-webhook-server")
        certs = self.workdir / "tmp" / "k8s-webhook-server" / "serving-certs"
        certs.mkdir(parents=True, exist_ok=True)
        (certs / "tls.crt").write_bytes(cert.read_bytes())
        (certs / "tls.key").write_bytes(key.read_bytes())
        self.start(timeout)
        t2 = time.monotonic()
        hooks = webhook_configurations(self.config, f"https://127.0.0.1:{self.webhook_port}",
                                       cp.pki.ca_cert.read_bytes())
        cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": hooks}))
        self.started_in = {"CRDs": t1 - t0, "manager": t2 - t1, "webhooks": time.monotonic() - t2}

    def start(self, timeout: float = 120.0) -> None:
        cp = self.control_plane
        self._proc = _Proc("kserve-manager", [
            str(self.home / "manager"), f"--metrics-addr=127.0.0.1:{self.metrics_port}",
            f"--health-probe-addr=127.0.0.1:{self.health_port}", f"--webhook-port={self.webhook_port}",
            "--leader-elect=false",
        ], self.workdir / "manager.log", env={
            "KUBECONFIG": str(cp.kubeconfig), "POD_NAMESPACE": NAMESPACE, "TMPDIR": str(self.workdir / "tmp")})
        self._proc.start()
        self._wait_ready(timeout)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()

    def kill(self) -> None:
        """SIGKILL, as a crashed controller Pod."""
        if self._proc is not None:
            self._proc.kill()

    def restart(self, downtime: float = 0.0, timeout: float = 120.0) -> None:
        self.kill()
        time.sleep(downtime)
        self.start(timeout)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log(self, lines: int = 60) -> str:
        return self._proc.tail(lines) if self._proc is not None else ""

    def _wait_established(self, timeout: float) -> None:
        names = [f.rsplit("/", 1)[-1].removeprefix("serving.kserve.io_").removesuffix(".yaml") + ".serving.kserve.io"
                 for f in CRD_FILES]
        self.control_plane.wait_established(names, timeout)

    def _wait_ready(self, timeout: float) -> None:
        # HTTP 200 from /readyz, not the text "ok": a manager started too early dies on RBAC it
        # cannot read yet, and its last answer before dying may still be a body.
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        while time.monotonic() < deadline:
            if self._proc is None or not self._proc.alive():
                raise ControlPlaneError(f"KServe's manager exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise ControlPlaneError(f"KServe's manager not ready after {timeout}s:\n{self.log()}")


def install_kserve(control_plane: ControlPlane, workdir: Path, default_mode: str = "Standard") -> KServeController:
    kserve = KServeController(control_plane, workdir, kserve_dir(), default_mode)
    try:
        kserve.install()
    except BaseException:
        kserve.stop()
        raise
    return kserve
