"""Knative mode (KServe "Serverless"): one predictor whose newest revision is the canary, with
`canaryTrafficPercent` of the traffic; the rest stays on the last rolled-out revision. Knative
routes exactly, so the weight achieved is the weight asked.

Restoring the stable model after a rollback takes two moves, because Knative routes a "latest"
target to the latest *ready* revision, which is the bad canary until the restored one is ready:
first the stable model at 0 % (a new revision starts while the old stable keeps 100 %), then,
once that revision is ready, the percent removed.
"""

from __future__ import annotations

from typing import Any

from serin.operator.actions import ApplyServing, Served
from serin.operator.observations import ServingObservation, Variant
from serin.operator.routing.base import (
    Mode,
    Op,
    Seen,
    Write,
    diff,
    isvc_metadata,
    model_spec,
    not_ready,
    storage_container,
)
from serin.operator.spec import ModelSpec


class KnativeRouter:
    traffic = "knative"

    def __init__(self, store_container: str = "") -> None:
        self.store_container = store_container  # base.storage_container

    @property
    def mode(self) -> Mode:
        return Mode.KNATIVE

    def kinds(self) -> tuple[str, ...]:
        return ()

    def observe(self, seen: Seen) -> ServingObservation:
        return observe(seen.isvc)

    def plan(self, seen: Seen, desired: ApplyServing, spec: ModelSpec, owner: dict[str, Any]) -> list[Write]:
        storage, percent = target(seen.isvc, desired)
        digest = next((v.sha256 for v in (desired.stable, desired.canary) if v and v.storageUri == storage), "")
        want = predictor(storage, percent, spec, seen.name, digest, seen.namespace, self.store_container)
        if seen.isvc is None:
            body = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                    "metadata": isvc_metadata(seen, owner, Mode.KNATIVE, {}),
                    "spec": {"predictor": {k: v for k, v in want.items() if v is not None}}}
            return [Write("isvc", Op.CREATE, seen.name, body)]
        pred = diff((seen.isvc.get("spec") or {}).get("predictor") or {}, want)
        return [Write("isvc", Op.PATCH, seen.name, {"spec": {"predictor": pred}})] if pred else []


def target(isvc: dict[str, Any] | None, desired: ApplyServing) -> tuple[str, int | None]:
    """(storageUri, canaryTrafficPercent) for this tick's move towards `desired`."""
    if desired.canary is not None:
        return desired.canary.storageUri, desired.weight
    stable = desired.stable.storageUri
    if isvc is None:
        return stable, None
    pred = (isvc.get("spec") or {}).get("predictor") or {}
    storage = (pred.get("model") or {}).get("storageUri")
    if pred.get("canaryTrafficPercent") == 0:
        if storage != stable:
            return stable, 0  # restore the stable model while the canary has no traffic
        # The restored revision must be a new one, ready: never the revision of the version being
        # taken out, which a status not yet caught up with the restore still names as the latest.
        components = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
        created = str(components.get("latestCreatedRevision", ""))
        restored = created not in ("", desired.retiring) and components.get("latestReadyRevision") == created
        return stable, None if restored else 0
    return stable, None


def predictor(storage: str, percent: int | None, spec: ModelSpec, model: str = "", sha256: str = "",
              namespace: str = "", store_container: str = "") -> dict[str, Any]:
    """`model`: the Model's name (its feedback Secret and state volume; none when empty);
    `sha256`: the digest the runtime checks the model against; `namespace`: the Model's (its
    captured records' prefix); `store_container`: the S3 model store's ClusterStorageContainer."""
    return {
        "storageContainerName": storage_container(storage, store_container),
        "minReplicas": spec.serving.minReplicas,
        "maxReplicas": spec.serving.maxReplicas,
        # None removes the field in a merge patch: 100 % to the latest ready revision.
        "canaryTrafficPercent": percent,
        # No state volume: Knative refuses emptyDir unless its kubernetes.podspec-volumes-emptydir
        # feature is on; the runtime then keeps answered feedback ids in the container's own /tmp.
        "model": model_spec(Served(0, storage, sha256), spec, model=model, namespace=namespace),
    }


def observe(isvc: dict[str, Any] | None) -> ServingObservation:
    if not isvc:
        return ServingObservation(mode=Mode.KNATIVE, traffic=KnativeRouter.traffic)
    spec = (isvc.get("spec") or {}).get("predictor") or {}
    status = isvc.get("status") or {}
    pred = (status.get("components") or {}).get("predictor") or {}
    traffic: dict[str, int] = {}
    for entry in pred.get("traffic") or []:
        rev = entry.get("revisionName")
        if rev:
            traffic[rev] = traffic.get(rev, 0) + int(entry.get("percent") or 0)
    raw_percent = spec.get("canaryTrafficPercent")
    percent = None if raw_percent is None else int(raw_percent)
    storage = str((spec.get("model") or {}).get("storageUri") or "")
    created, ready_rev = pred.get("latestCreatedRevision", ""), pred.get("latestReadyRevision", "")
    rolled_out = pred.get("latestRolledoutRevision", "")
    latest_ready = created != "" and ready_rev == created
    # Not KServe's status.observedGeneration: KServe copies it from the Knative Service
    # (PropagateStatus), whose generation counts that object's own spec changes. It parts from the
    # InferenceService's when KServe rewrites the Knative Service alone (its config changed) or an
    # InferenceService edit changes nothing there, and a rollout judged by it would wait forever.
    # A status that has not caught up with Serin's last write is told by what it names instead:
    # every move changes the percent the traffic must show, or the revision that must serve it.
    url = str(status.get("url") or "")
    common = {"exists": True, "mode": Mode.KNATIVE, "traffic": KnativeRouter.traffic, "url": url,
              "not_ready": not_ready(isvc)}
    if percent is None:
        latest = Variant(storage, ready_rev, latest_ready, traffic.get(ready_rev, 0))
        settled = latest_ready and traffic.get(ready_rev, 0) == 100
        return ServingObservation(settled=settled, stable=latest, **common)  # type: ignore[arg-type]
    # The canary is a revision of its own: until Knative has created it, the newest revision is
    # the rolled-out one (a status not yet caught up with a new storageUri), not the canary.
    canary_up = latest_ready and created != rolled_out
    canary = Variant(storage, created, canary_up, traffic.get(created, 0))
    stable = Variant("", rolled_out, rolled_out != "", traffic.get(rolled_out, 0))
    # Knative routes exactly: once the newest revision is ready it has exactly the percent asked.
    settled = canary.weight == percent if canary_up else percent == 0 or created == ""
    return ServingObservation(settled=settled, stable=stable, canary=canary, canaryTarget=percent,
                              **common)  # type: ignore[arg-type]
