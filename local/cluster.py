"""A real single-node cluster: the control plane (controlplane.py) with every controller and the
scheduler, one node (node.py) running Serin's own images (hack/images.sh), and helm.

The cluster tier of the tests and `serin dev` (later) start it through start_cluster(); stop() tears
everything down and says what, if anything, was left on the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from serin.local.controlplane import REPO_ROOT, ControlPlane, ControlPlaneError, start_control_plane
from serin.local.node import HOST_ADDRESS, Node, start_node
from serin.local.prometheus import KubernetesDiscovery

if TYPE_CHECKING:
    from serin.local.gateway import Gateway
    from serin.local.kserve_controller import KServeController


@dataclass(frozen=True)
class Image:
    name: str  # operator | converter | runtime | pause
    ref: str  # the name containerd knows it by, e.g. ghcr.io/serin/operator:dev-1a2b3c4d5e6f
    archive: Path  # the OCI archive hack/images.sh exported

    @property
    def repository(self) -> str:
        return self.ref.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.ref.rsplit(":", 1)[1]


def built_images(root: Path = REPO_ROOT) -> dict[str, Image]:
    """The images of this checkout: those hack/test.sh built (SERIN_IMAGES names its list), else
    built now by hack/images.sh (cached by content: seconds when nothing changed)."""
    listing = os.environ.get("SERIN_IMAGES")
    if listing and Path(listing).exists():
        text = Path(listing).read_text()
    else:
        out = subprocess.run(["bash", str(root / "hack" / "images.sh")], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise ControlPlaneError(f"hack/images.sh failed ({out.returncode}):\n{out.stderr[-4000:]}")
        text = out.stdout
    images = {}
    for line in text.splitlines():
        if line.strip():
            name, ref, archive = line.split()
            images[name] = Image(name, ref, Path(archive))
    missing = {"pause", "operator", "converter", "runtime"} - set(images)
    if missing:
        raise ControlPlaneError(f"hack/images.sh listed no image for {', '.join(sorted(missing))}")
    return images


@dataclass
class Cluster:
    control_plane: ControlPlane
    node: Node
    images: dict[str, Image]
    started_in: dict[str, float]  # seconds: control plane, node (images imported included)
    kserve: KServeController | None = None  # KServe's CRDs, and its controller once installed
    gateway: Gateway | None = None

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.control_plane.kubectl(*args, input=input, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.control_plane.bin_dir / "helm"), "--kubeconfig", str(self.control_plane.kubeconfig), *args]
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        if check and out.returncode != 0:
            raise ControlPlaneError(f"helm {' '.join(args)} failed ({out.returncode}):\n{out.stderr.strip()}")
        return out

    def hostpath_claim(self, namespace: str, claim: str, path: Path, size: str = "10Gi") -> None:
        """A PersistentVolumeClaim bound to a hostPath PersistentVolume on the node (its directory
        made writable for the images' uid 65532: hostPath ignores fsGroup). The model store
        (`pvc://serin-models`) and pvc:// model sources are such claims here."""
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        volume = f"{namespace}-{claim}"
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
             "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteMany"],
                      "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                      "hostPath": {"path": str(path), "type": "Directory"},
                      "claimRef": {"namespace": namespace, "name": claim}}},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
             "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": volume,
                      "resources": {"requests": {"storage": size}}}}]}))
        deadline = time.monotonic() + 60
        while self.kubectl("get", "pvc", claim, "-n", namespace, "-o", "jsonpath={.status.phase}").stdout != "Bound":
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"claim {namespace}/{claim} not bound after 60s")
            time.sleep(0.3)

    def prometheus_discovery(self) -> KubernetesDiscovery:
        """What a Prometheus on the host needs to discover this cluster's runtime Pods."""
        pki = self.control_plane.pki
        return KubernetesDiscovery(self.control_plane.server, pki.ca_cert, pki.admin_cert, pki.admin_key)

    def stop(self) -> list[str]:
        """Stops the node and the control plane; returns what was left on the host (nothing, or a defect)."""
        for part in (self.kserve, self.gateway):
            if part is not None:
                part.stop()
        try:
            self.node.stop()
        finally:
            self.control_plane.stop()
        return Node.leftovers()


def start_cluster(workdir: Path, images: dict[str, Image] | None = None) -> Cluster:
    images = images or built_images()
    t0 = time.monotonic()
    Node.create_network()
    try:
        cp = start_control_plane(workdir / "controlplane", apiserver_address=HOST_ADDRESS)
    except BaseException:
        Node.cleanup_leftovers()
        raise
    t1 = time.monotonic()
    try:
        node = start_node(workdir / "node", cp, [image.archive for image in images.values()])
    except BaseException:
        cp.stop()
        Node.cleanup_leftovers()
        raise
    return Cluster(cp, node, images, {"control plane": t1 - t0, "node": time.monotonic() - t1})
