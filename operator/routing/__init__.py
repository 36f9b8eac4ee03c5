"""Which router serves a Model: its KServe deployment mode, and in Standard mode whether a Gateway
is configured. See base.py for the interface."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from serin.operator import gateway_metrics, pods
from serin.operator.observations import ServingObservation
from serin.operator.routing.base import MODE_ANNOTATION, Mode, Router, Seen, Write, parse_mode
from serin.operator.routing.knative import KnativeRouter
from serin.operator.routing.standard import GatewayRouter, ReplicaRatioRouter, deployment_name
from serin.operator.spec import ModelSpec

log = logging.getLogger("serin.routing")

__all__ = [
    "GatewayRouter",
    "KnativeRouter",
    "Mode",
    "ReplicaRatioRouter",
    "Router",
    "Routing",
    "Seen",
    "Write",
    "default_mode_from_configmap",
    "parse_gateway",
    "parse_mode",
]


@dataclass(frozen=True)
class Routing:
    # KServe's deploy.defaultDeploymentMode: what a new InferenceService without the annotation
    # gets. KServe's own default, when its ConfigMap cannot be read, is Serverless (Knative).
    default_mode: Mode = Mode.KNATIVE
    gateway: GatewayRouter | None = None
    # The S3 model store's ClusterStorageContainer, named on every predictor of an s3:// version
    # (SERIN_MODEL_STORE_CONTAINER, set by the chart; the Gateway router is given it too).
    store_container: str = ""

    def mode_for(self, spec: ModelSpec, isvc: dict[str, Any] | None) -> Mode:
        """The mode of the InferenceService when there is one (KServe cannot change it), else the
        Model's choice, else KServe's default."""
        running = parse_mode(((isvc or {}).get("metadata") or {}).get("annotations", {}).get(MODE_ANNOTATION))
        if isvc is not None and running is None:
            running = parse_mode((isvc.get("status") or {}).get("deploymentMode")) or self.default_mode
        return running or spec.serving.deploymentMode or self.default_mode

    def router_for(self, spec: ModelSpec, isvc: dict[str, Any] | None) -> Router:
        if self.mode_for(spec, isvc) == Mode.KNATIVE:
            return KnativeRouter(self.store_container)
        return self.gateway or ReplicaRatioRouter(self.store_container)

    def observe(self, router: Router, spec: ModelSpec, seen: Seen) -> ServingObservation:
        obs = router.observe(seen)
        obs = replace(obs, trouble=pods.trouble(seen.pods) or pods.serving_trouble(obs.not_ready, seen.name),
                      canary_crashes=canary_crashes(router, seen, obs))
        foreign = seen.foreign()
        if foreign:
            return replace(obs, refused=foreign)
        wanted = spec.serving.deploymentMode
        if seen.isvc is not None and wanted is not None and wanted != router.mode:
            return replace(obs, refused=(
                f"spec.serving.deploymentMode is {wanted} but the InferenceService runs in {router.mode} mode, "
                "and KServe cannot change the mode of an InferenceService: delete the InferenceService to move"))
        return obs


# The label Knative puts on a revision's Pods.
KNATIVE_REVISION_LABEL = "serving.knative.dev/revision"


def canary_crashes(router: Router, seen: Seen, obs: ServingObservation) -> pods.Crashes | None:
    """The canary's Pods, told apart from the stable's: Knative labels them with their revision;
    in Standard mode they are the canary predictor Deployment's (its selector)."""
    if obs.canary is None or not obs.canary.revision or not seen.pods:
        return None
    if router.mode == Mode.KNATIVE:
        labels = {KNATIVE_REVISION_LABEL: obs.canary.revision}
    else:
        name = deployment_name(seen.name, obs.canary.revision)
        dep = next((d for d in seen.deployments if (d.get("metadata") or {}).get("name") == name), None)
        labels = dict((((dep or {}).get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
    mine = pods.selected(seen.pods, labels)
    return pods.crashes(mine) if mine else None


def parse_gateway(value: str, domain: str = "", metrics: str = "", metrics_selector: str = "",
                  store_container: str = "") -> GatewayRouter | None:
    """SERIN_GATEWAY: "NAMESPACE/NAME" or "NAMESPACE/NAME/LISTENER" (empty: no Gateway);
    `metrics`: SERIN_GATEWAY_METRICS, the implementation whose request counters to read, from the
    scrape target `metrics_selector` names (gateway_metrics.parse)."""
    if not value.strip():
        return None
    parts = value.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"SERIN_GATEWAY must be NAMESPACE/NAME[/LISTENER], not {value!r}")
    return GatewayRouter(parts[0], parts[1], parts[2] if len(parts) == 3 else "", domain or "example.com",
                         gateway_metrics.parse(metrics, metrics_selector), store_container)


def default_mode_from_configmap(cm: dict[str, Any] | None) -> Mode:
    """KServe's inferenceservice-config: data.deploy is JSON with defaultDeploymentMode."""
    raw = ((cm or {}).get("data") or {}).get("deploy")
    if not raw:
        return Mode.KNATIVE
    try:
        return parse_mode(json.loads(raw).get("defaultDeploymentMode")) or Mode.KNATIVE
    except (ValueError, AttributeError):
        log.warning("KServe's deploy config is not JSON (%r): assuming its default, Serverless", raw[:200])
        return Mode.KNATIVE
