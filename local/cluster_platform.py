"""The whole platform on a real node, as a user runs it: the cluster (local/cluster.py), KServe's
own controller and webhooks in Standard mode (local/kserve_controller.py), Traefik as the Gateway
(local/gateway.py), a Prometheus that discovers the runtime Pods through the Kubernetes API, and
Serin installed with `helm install charts/serin` from its own images, pointed at the Gateway.

Models read their artifacts from the platform's S3 server (versitygw on the host end of the node's
veth: a bucket and an S3 user per namespace, whose keys are the namespace's Secret `serin-s3`), or
from the `sources` claim (pvc://sources/...), a hostPath volume on the node. The model store is the
same server's bucket `serin-models` (`s3://serin-models/versions`, the chart's S3 store): the
namespace's part of it, `versions/{namespace}/`, is all its store keys (a second S3 user, Secret
`serin-model-store`) may read and write; `model_store="pvc"` makes it the `serin-models` claim.
`serin demo --cluster` and the cluster tier's KServe tests run on it. It needs root, and `down()`
leaves nothing on the host.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serin.local.cluster import Cluster, start_cluster
from serin.local.controlplane import REPO_ROOT
from serin.local.demo_models import VersionFiles
from serin.local.gateway import Gateway, install_gateway
from serin.local.kserve_controller import KServeController, kserve_dir
from serin.local.node import HOST_ADDRESS
from serin.local.prometheus import Prometheus, start_prometheus
from serin.local.s3 import S3Server, S3User, start_s3

CHART = REPO_ROOT / "charts" / "serin"
RELEASE, SYSTEM = "serin", "serin-system"
# Small enough that a stable, a canary and the operator fit on 2 cores.
MODEL_RESOURCES = {"requests": {"cpu": "50m", "memory": "192Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
# The namespace's S3 keys (a KServe S3 Secret's keys), named by its Models' spec.source.s3.secretName.
S3_SECRET = "serin-s3"
# The S3 model store: a root-owned bucket, each namespace's keys scoped to its prefix by a bucket policy.
STORE_BUCKET, STORE_PREFIX, STORE_SECRET = "serin-models", "versions", "serin-model-store"


def image_values(cluster: Cluster) -> list[str]:
    op, conv, rt = (cluster.images[n] for n in ("operator", "converter", "runtime"))
    return ["--set", f"operator.image.repository={op.repository}", "--set", f"operator.image.tag={op.tag}",
            "--set", f"conversion.image.repository={conv.repository}", "--set", f"conversion.image.tag={conv.tag}",
            "--set", f"servingRuntime.image.repository={rt.repository}", "--set", f"servingRuntime.image.tag={rt.tag}"]


@dataclass
class ClusterPlatform:
    cluster: Cluster
    namespace: str
    sources: Path  # the `sources` claim's directory on the host
    prometheus: Prometheus
    s3: S3Server
    s3_user: S3User  # the namespace's S3 user, owner of its bucket
    started_in: dict[str, float] = field(default_factory=dict)

    @property
    def bucket(self) -> str:
        """The namespace's bucket (named after it) on the platform's S3 server."""
        return self.namespace

    @property
    def gateway(self) -> Gateway | None:
        return self.cluster.gateway

    def stage(self, name: str, version: str, files: VersionFiles) -> tuple[str, str]:
        """Copies a version's artifact and sample onto the `sources` claim: their pvc:// URIs."""
        target = self.sources / name / version
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(files.model, target / files.model.name)
        shutil.copy(files.sample, target / files.sample.name)
        base = f"pvc://sources/{name}/{version}"
        return f"{base}/{files.model.name}", f"{base}/{files.sample.name}"

    def upload(self, name: str, version: str, files: VersionFiles) -> dict[str, Any]:
        """Uploads a version's artifact and sample to the namespace's bucket, with the namespace's
        keys: the Model's spec.source (but its format) that reads them back."""
        put = {what: self.s3.put(self.bucket, f"{name}/{version}/{path.name}", path, user=self.s3_user)
               for what, path in (("uri", files.model), ("sampleUri", files.sample))}
        return {**put, "s3": {"endpoint": self.s3.url, "secretName": S3_SECRET}}

    def use_gateway(self, workdir: Path) -> Gateway:
        """Traefik and the Gateway, and the operator pointed at it (helm upgrade)."""
        if self.cluster.gateway is None:
            self.cluster.gateway = install_gateway(self.cluster.control_plane, workdir)
        ns, name, listener = self.cluster.gateway.setting.split("/")
        # Traefik's request counters, for gatewayErrorRate: the 5xx it answered for each backend.
        self.prometheus.scrape("gateway", [self.cluster.gateway.metrics_target])
        self.cluster.helm("upgrade", RELEASE, str(CHART), "-n", SYSTEM, "--reuse-values",
                          "--set", f"gateway.name={name}", "--set", f"gateway.namespace={ns}",
                          "--set", f"gateway.listener={listener}", "--set", "gateway.metrics=traefik",
                          "--set-string", 'gateway.metricsSelector=job="gateway"',
                          "--wait", "--timeout", "240s")
        self.cluster.kubectl("rollout", "status", f"deployment/{RELEASE}-operator", "-n", SYSTEM, "--timeout=120s")
        return self.cluster.gateway

    def host_processes(self) -> dict[str, int]:
        """The platform's processes on the host (each the leader of its own process group), so that
        `serin dev down` can stop them even when the process that started them is gone."""
        cluster = self.cluster
        procs = cluster.control_plane.pids()
        for name, part in (("kserve-manager", cluster.kserve), ("traefik", cluster.gateway)):
            pid = part.pid if part is not None else None
            if pid is not None:
                procs[name] = pid
        if self.prometheus.pid:
            procs["prometheus"] = self.prometheus.pid
        if self.s3.pid:
            procs["versitygw"] = self.s3.pid
        return procs

    def down(self) -> list[str]:
        """Stops everything; what was left on the host (nothing, or a defect)."""
        self.prometheus.stop()
        self.s3.stop()
        return self.cluster.stop()


def add_store_namespace(cluster: Cluster, s3: S3Server, namespace: str) -> S3User:
    """A namespace's part of the S3 model store: an S3 user that may read and write
    `versions/{namespace}/` of the store bucket and nothing else, its keys the namespace's Secret
    `serin-model-store` (what a platform team does for each namespace with Models)."""
    user = s3.create_user(f"{namespace}-store")
    s3.grant(STORE_BUCKET, f"{STORE_PREFIX}/{namespace}", user)
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": STORE_SECRET, "namespace": namespace},
        "stringData": {"AWS_ACCESS_KEY_ID": user.access_key, "AWS_SECRET_ACCESS_KEY": user.secret_key}}))
    return user


def bring_up(workdir: Path, namespace: str = "models", cluster: Cluster | None = None,
             gateway: bool = False, operator_replicas: int = 1, model_store: str = "s3") -> ClusterPlatform:
    """The platform under `workdir`. Given `cluster` (the tests' shared one) it is installed there.
    `model_store`: "s3" (the S3 server's bucket) or "pvc" (a claim)."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    own = cluster is None  # stopped here on failure only if started here
    if cluster is None:
        cluster = start_cluster(workdir / "cluster")
        cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "manifests" / "crds"))
    timings.update(cluster.started_in)
    prom: Prometheus | None = None
    s3: S3Server | None = None
    try:
        if cluster.kserve is None:
            cluster.kserve = KServeController(cluster.control_plane, cluster.control_plane.workdir / "kserve",
                                              kserve_dir())
        t = time.monotonic()
        cluster.kserve.install()
        timings["KServe"] = time.monotonic() - t
        cluster.kubectl("create", "namespace", namespace, check=False)
        volumes = workdir / "volumes"
        volumes.mkdir(parents=True, exist_ok=True)
        volumes.chmod(0o755)
        for claim, sub in (("sources", "sources"), *((("serin-models", "store"),) if model_store == "pvc" else ())):
            cluster.hostpath_claim(namespace, claim, volumes / sub)
        # The platform's S3 server, fresh with the cluster, where conversion Pods reach it: a bucket
        # owned by the namespace's S3 user, whose keys are the namespace's Secret.
        t = time.monotonic()
        shutil.rmtree(workdir / "s3", ignore_errors=True)
        s3 = start_s3(workdir / "s3", listen=HOST_ADDRESS)
        s3_user = s3.create_user(namespace)
        s3.create_bucket(namespace, owner=s3_user)
        cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": S3_SECRET, "namespace": namespace},
            "stringData": {"AWS_ACCESS_KEY_ID": s3_user.access_key, "AWS_SECRET_ACCESS_KEY": s3_user.secret_key}}))
        store_values: list[str] = ["--set", "conversion.modelStore=pvc://serin-models"]
        if model_store == "s3":
            s3.create_bucket(STORE_BUCKET)
            store_values = ["--set", f"conversion.modelStore=s3://{STORE_BUCKET}/{STORE_PREFIX}",
                            "--set", f"conversion.modelStoreS3.endpoint={s3.url}"]
            add_store_namespace(cluster, s3, namespace)
        timings["S3"] = time.monotonic() - t
        # Where the operator's Pod reaches it: the host end of the node's veth.
        prom = start_prometheus(workdir / "prometheus", cluster.control_plane.bin_dir, scrape_interval="1s",
                                kubernetes=cluster.prometheus_discovery(), listen=HOST_ADDRESS)
        t = time.monotonic()
        # upgrade --install: idempotent, whatever an earlier run over the same folder left.
        cluster.helm("upgrade", "--install", RELEASE, str(CHART), "-n", SYSTEM, "--create-namespace",
                     *image_values(cluster),
                     "--set", f"conversion.serviceAccount.namespaces={{{namespace}}}",
                     "--set", f"operator.replicas={operator_replicas}", "--set", f"operator.prometheusUrl={prom.url}",
                     *store_values, "--wait", "--timeout", "240s")
        timings["helm upgrade --install"] = time.monotonic() - t
        platform = ClusterPlatform(cluster, namespace, volumes / "sources", prom, s3, s3_user, timings)
        if gateway:
            t = time.monotonic()
            platform.use_gateway(workdir / "gateway")
            timings["Gateway"] = time.monotonic() - t
        timings["total"] = time.monotonic() - t0
        return platform
    except BaseException:
        if prom is not None:
            prom.stop()
        if s3 is not None:
            s3.stop()
        if own:
            cluster.stop()
        raise
