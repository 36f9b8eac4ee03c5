"""Traffic as one interface (Flagger's router: set routes, get routes), whatever KServe mode and
router serve a Model. Each router is a pair of pure functions over what was read this tick:

    observe(seen)          -> ServingObservation   (stable / canary / weights, in neutral terms)
    plan(seen, desired)    -> writes                (the next safe move towards `desired`)

and the reconcile loop does the I/O around them (read the objects, execute the writes). A router
never sends a request to a version the status does not name: where KServe or the Gateway needs
several moves (Knative's restore at 0 %, a promotion behind a route), `plan` makes one move per
tick and waits, through `seen`, for the previous one to take effect.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from serin.operator.actions import ApplyServing, Served
from serin.operator.observations import ServingObservation
from serin.operator.spec import CaptureSpec, DeploymentMode, ModelSpec

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
RUNTIME = "serin-onnx"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# The runtime labels its metrics with this revision (runtime/cli.py); Knative sets K_REVISION itself.
REVISION_ENV = "SERIN_REVISION"
# The runtime serves model.onnx only if its bytes have this digest (runtime/model.py).
MODEL_SHA256_ENV = "SERIN_MODEL_SHA256"
# The key prediction ids are signed with (runtime/feedback.py): one per Model, in a Secret the
# operator creates and every predictor of the Model reads, so ground truth for any answer can be
# sent to any replica of either version, also after restarts.
FEEDBACK_KEY_ENV = "SERIN_FEEDBACK_KEY"
FEEDBACK_SECRET_KEY = "key"
# Who may send ground truth: holders of the sender token, kept in a Secret of its own (key
# "token"), which the team's labelling pipeline may read without reading the key: a sender tells
# truth about ids, it must not be able to mint them. An answered client holds ids but not this.
FEEDBACK_TOKEN_ENV = "SERIN_FEEDBACK_TOKEN"
CAPTURE_ENV = "SERIN_CAPTURE"  # runtime/capture.py: one JSON object
FEEDBACK_SECRET_TOKEN = "token"
# Where the runtime keeps the ids that got their ground truth (runtime/cli.py picks it up when it is
# a writable directory): an emptyDir, so a duplicate is still refused after a container restart.
STATE_VOLUME, STATE_DIR = "serin-state", "/var/lib/serin"


def feedback_secret_name(model: str) -> str:
    return f"{model}-serin-feedback"[:253]


def feedback_sender_secret_name(model: str) -> str:
    return f"{model}-serin-feedback-sender"[:253]


def state_volumes() -> list[dict[str, Any]]:
    return [{"name": STATE_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}}]


Mode = DeploymentMode


# KServe's own words for its modes, old and new ("RawDeployment" became "Standard" in v0.15).
_MODE_NAMES = {"serverless": Mode.KNATIVE, "knative": Mode.KNATIVE,
               "standard": Mode.STANDARD, "rawdeployment": Mode.STANDARD}


def parse_mode(value: str | None) -> Mode | None:
    return _MODE_NAMES.get((value or "").strip().lower())


def kserve_mode_name(mode: Mode) -> str:
    """The annotation value KServe v0.20 understands."""
    return "Serverless" if mode == Mode.KNATIVE else "Standard"


@dataclass(frozen=True)
class Seen:
    """The raw objects a router read this tick (plain dicts, as the API returned them)."""

    namespace: str
    name: str  # the Model's, and its InferenceService's
    isvc: dict[str, Any] | None = None
    deployments: tuple[dict[str, Any], ...] = ()  # Standard mode: the predictor Deployments
    service: dict[str, Any] | None = None  # Standard mode without a Gateway: Serin's split Service
    route: dict[str, Any] | None = None  # with a Gateway: Serin's HTTPRoute
    pods: tuple[dict[str, Any], ...] = ()  # the InferenceService's Pods (KServe's label), either mode
    uid: str = ""  # the Model's: what Serin writes is owned by it, and nothing else is written
    # With a Gateway: the EndpointSlices of the predictor Services (KServe's label, which the
    # EndpointSlice controller copies from the Service), what the Gateway routes to.
    endpoints: tuple[dict[str, Any], ...] = ()

    def foreign(self) -> str:
        """Why the InferenceService of this Model's name is not this Model's to write ("" when it
        is, or there is none): Serin never takes over an object it did not create. One made by
        hand, by another tool, or left by an earlier Model of the same name (its garbage
        collection pending) is reported, never patched."""
        if self.isvc is None or not self.uid:
            return ""
        refs = (self.isvc.get("metadata") or {}).get("ownerReferences") or []
        if any(r.get("kind") == "Model" and r.get("uid") == self.uid for r in refs):
            return ""
        owners = ", ".join(f"{r.get('kind')} {r.get('name')} (uid {r.get('uid')})" for r in refs) or "no owner"
        return (f"InferenceService {self.namespace}/{self.name} exists and is not this Model's ({owners}): "
                "Serin does not take over objects it did not create; delete it, or name the Model otherwise")


class Op(enum.StrEnum):
    CREATE = "create"
    PATCH = "patch"  # JSON merge patch
    DELETE = "delete"


@dataclass(frozen=True)
class Write:
    """One API write a router asks for: `kind` is isvc | service | httproute."""

    kind: str
    op: Op
    name: str
    body: dict[str, Any] = field(default_factory=dict)


class Router(Protocol):
    traffic: str  # knative | replicaRatio | gateway: how weights are set

    @property
    def mode(self) -> Mode: ...

    def kinds(self) -> tuple[str, ...]:
        """What `observe` needs read besides the InferenceService."""
        ...

    def observe(self, seen: Seen) -> ServingObservation: ...

    def plan(self, seen: Seen, desired: ApplyServing, spec: ModelSpec, owner: dict[str, Any]) -> list[Write]: ...


def not_ready(isvc: dict[str, Any] | None) -> str:
    """KServe's reason the InferenceService is not Ready ("" when it is, or says nothing). Both
    modes carry it: Knative's configuration and route conditions, the predictor Deployments'
    Available and ReplicaFailure in Standard mode, copied into Ready by PropagateStatus."""
    for cond in ((isvc or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") != "True":
            words = [str(cond[k]) for k in ("reason", "message") if cond.get(k)]
            return ": ".join(words)
    return ""


def predictor_name(version: Served) -> str:
    """The Standard-mode predictor of a version: its Deployment is {isvc}-gen{N}-predictor."""
    return f"gen{version.generation}"


def capture_env(capture: CaptureSpec, namespace: str) -> list[dict[str, Any]]:
    """The runtime's capture settings (runtime/capture.py reads $SERIN_CAPTURE) and the S3 keys of
    the Secret spec.serving.capture.s3.secretName names, each from the key of its own name."""
    s3 = capture.s3
    settings: dict[str, Any] = {"share": capture.share, "uri": capture.uri, "namespace": namespace,
                                "retentionSeconds": capture.retention, "flushSeconds": capture.flush_interval}
    if s3 is not None:
        settings["s3"] = {k: v for k, v in (("endpoint", s3.endpoint), ("region", s3.region),
                                            ("addressing", s3.addressing), ("verifyTls", s3.verifyTls))
                          if v is not None}
    return [{"name": CAPTURE_ENV, "value": json.dumps(settings, sort_keys=True)},
            *(s3.keys_env() if s3 is not None else [])]


def storage_container(storage_uri: str, container: str) -> str | None:
    """The ClusterStorageContainer KServe must fetch `storage_uri` with: Serin's own for its S3
    model store (the chart's, pinned by name: matching by URI could pick KServe's default
    initializer, which falls back to the node's cloud identity), none for a claim (KServe mounts
    it) or when no S3 store is configured. None removes the field in a merge patch."""
    return container if container and storage_uri.startswith("s3://") else None


def model_spec(version: Served, spec: ModelSpec, revision: str | None = None, model: str = "",
               state_volume: bool = False, namespace: str = "") -> dict[str, Any]:
    """The predictor's model container; `model`: the Model's name, whose feedback Secret it reads;
    `state_volume`: mount the predictor's STATE_VOLUME (state_volumes()); `namespace`: the Model's,
    which names its captured records' prefix."""
    serving = spec.serving
    container: dict[str, Any] = {
        "modelFormat": {"name": "onnx"},
        # Named explicitly: KServe would otherwise pick the highest-priority onnx runtime (Triton).
        "runtime": RUNTIME,
        "storageUri": version.storageUri,
        "protocolVersion": str(serving.protocol),
    }
    if serving.resources:
        container["resources"] = serving.resources
    env: list[dict[str, Any]] = []
    if revision is not None:
        env.append({"name": REVISION_ENV, "value": revision})
    if version.sha256:
        env.append({"name": MODEL_SHA256_ENV, "value": version.sha256})
    if model:
        # optional: a predictor whose Secret is missing (an operator without the right to create
        # it) still serves; it signs ids with a key of its own, valid on that replica only, and
        # without a sender token it refuses all feedback.
        secrets = ((FEEDBACK_KEY_ENV, feedback_secret_name(model), FEEDBACK_SECRET_KEY),
                   (FEEDBACK_TOKEN_ENV, feedback_sender_secret_name(model), FEEDBACK_SECRET_TOKEN))
        env += [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
                for var, secret, key in secrets]
    if serving.capture is not None:
        env += capture_env(serving.capture, namespace)
    if state_volume:
        container["volumeMounts"] = [{"name": STATE_VOLUME, "mountPath": STATE_DIR}]
    if env:
        container["env"] = env
    return container


def isvc_metadata(seen: Seen, owner: dict[str, Any], mode: Mode, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "name": seen.name, "namespace": seen.namespace,
        "labels": {"app.kubernetes.io/managed-by": "serin", "serin.dev/model": seen.name},
        # The mode is pinned on the InferenceService Serin creates, so that a later change of
        # KServe's default never moves a running Model to another mode under its rollout.
        "annotations": {MODE_ANNOTATION: kserve_mode_name(mode), **annotations},
        "ownerReferences": [owner],
    }


def covers(have: Any, want: Any) -> bool:
    """`have` says everything `want` says (and maybe more: the fields KServe's defaulting webhook
    adds, such as `model.name: ""`), so writing `want` would change nothing that matters."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(
            (k not in have) if v is None else covers(have.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) and all(map(covers, have, want))
    return bool(have == want)


def diff(have: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """The merge patch turning the `want` keys of `have` into `want` (None removes a key); empty
    when `have` already covers `want`, so a steady tick writes nothing."""
    out: dict[str, Any] = {}
    for key, value in want.items():
        before = have.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = diff(before, value)
            if sub:
                out[key] = sub
        elif value is None:
            if key in have:
                out[key] = None
        elif not covers(before, value):
            out[key] = value
    return out
