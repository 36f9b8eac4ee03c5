"""The cluster tier: a real single-node Kubernetes (local/cluster.py) running Serin's own images,
installed by Helm, with KServe's real CRDs (and, where a module asks for it, KServe's real
controller and webhooks, and Traefik as the Gateway). It needs root (namespaces, mounts, iptables,
cgroups): without it these tests fail with that reason, they are never skipped. One cluster serves
each module of the tier; tearing it down must leave nothing on the host, and the teardown fails
the run if it does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from serin.local.cluster import Cluster, start_cluster
from serin.local.kserve_controller import KServeController, kserve_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def one_worker_for_the_node(request: pytest.FixtureRequest) -> None:
    """hack/test.sh runs two xdist workers; every test of this tier is in xdist_group "node" so one
    worker runs them all, one node on the host at a time. Grouping that is silently off (as with
    pytest 9.2, pytest-dev/pytest-xdist#1386) would start two nodes on one host: fail before any
    starts (a module-scoped autouse fixture runs before the module's other fixtures)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    ungrouped = [i.nodeid for i in request.session.items if i.path == request.path and not i.nodeid.endswith("@node")]
    if ungrouped:
        pytest.fail(f"{ungrouped[0]} is not grouped on one xdist worker (--dist loadgroup and pytestmark = "
                    f"pytest.mark.xdist_group('node')): two real nodes would share the host")


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    print("\ncluster up: " + ", ".join(f"{k} {v:.1f}s" for k, v in cluster.started_in.items()))
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "manifests" / "crds"))
        cluster.kserve = KServeController(cluster.control_plane, cluster.control_plane.workdir / "kserve", kserve_dir())
        cluster.kserve.install_crds()
        # KServe's namespace, where the chart grants the operator a read of KServe's ConfigMap.
        cluster.kubectl("create", "namespace", "kserve")
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/models.serin.dev")
        yield cluster
    finally:
        left = cluster.stop()
        assert left == [], f"the node left state on the host: {left}"
