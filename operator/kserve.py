"""The InferenceService: the desired predictor built from the status, and KServe's status read
back into a ServingObservation. Plain dicts: KServe's Python client is synchronous and would
block kopf's event loop (see DESIGN.md)."""

from __future__ import annotations

from typing import Any

from serin.operator.actions import ApplyServing
from serin.operator.observations import ServingObservation
from serin.operator.spec import ModelSpec

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
RUNTIME = "serin-onnx"


def predictor(desired: ApplyServing, spec: ModelSpec) -> dict[str, Any]:
    serving = spec.serving
    model: dict[str, Any] = {
        "modelFormat": {"name": "onnx"},
        # Named explicitly: KServe would otherwise pick the highest-priority onnx runtime (Triton).
        "runtime": RUNTIME,
        "storageUri": desired.storageUri,
        "protocolVersion": str(serving.protocol),
    }
    if serving.resources:
        model["resources"] = serving.resources
    return {
        "minReplicas": serving.minReplicas,
        "maxReplicas": serving.maxReplicas,
        # None removes the field in a merge patch: 100 % to the latest ready revision.
        "canaryTrafficPercent": desired.canaryPercent,
        "model": model,
    }


def isvc_body(name: str, namespace: str, owner: dict[str, Any], desired: ApplyServing,
              spec: ModelSpec) -> dict[str, Any]:
    pred = {k: v for k, v in predictor(desired, spec).items() if v is not None}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "serin", "serin.dev/model": name},
            "ownerReferences": [owner],
        },
        "spec": {"predictor": pred},
    }


def predictor_patch(current: dict[str, Any], desired: ApplyServing, spec: ModelSpec) -> dict[str, Any] | None:
    """A merge patch bringing the predictor to `desired`, or None when it already matches (so a
    steady tick writes nothing)."""
    want = predictor(desired, spec)
    have = (current.get("spec") or {}).get("predictor") or {}
    have_model = have.get("model") or {}
    diff: dict[str, Any] = {}
    for key in ("minReplicas", "maxReplicas", "canaryTrafficPercent"):
        if have.get(key) != want[key]:
            diff[key] = want[key]
    model_diff = {k: v for k, v in want["model"].items() if have_model.get(k) != v}
    if model_diff:
        diff["model"] = model_diff
    return {"spec": {"predictor": diff}} if diff else None


def observe(isvc: dict[str, Any] | None) -> ServingObservation:
    if not isvc:
        return ServingObservation()
    pred_spec = (isvc.get("spec") or {}).get("predictor") or {}
    status = isvc.get("status") or {}
    pred = (status.get("components") or {}).get("predictor") or {}
    traffic: dict[str, int] = {}
    for entry in pred.get("traffic") or []:
        rev = entry.get("revisionName")
        if rev:
            traffic[rev] = traffic.get(rev, 0) + int(entry.get("percent") or 0)
    percent = pred_spec.get("canaryTrafficPercent")
    return ServingObservation(
        exists=True,
        storageUri=(pred_spec.get("model") or {}).get("storageUri"),
        canaryPercent=None if percent is None else int(percent),
        # KServe's status.observedGeneration is a guard when present; the decision never relies on
        # it alone (it also checks revisions and traffic), since KServe versions fill it differently.
        upToDate=status.get("observedGeneration") in (None, (isvc.get("metadata") or {}).get("generation")),
        latestCreated=pred.get("latestCreatedRevision", ""),
        latestReady=pred.get("latestReadyRevision", ""),
        latestRolledout=pred.get("latestRolledoutRevision", ""),
        traffic=traffic,
    )
