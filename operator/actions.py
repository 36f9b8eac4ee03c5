"""What the decision asks the adapters to do. Each action is idempotent."""

from __future__ import annotations

from dataclasses import dataclass, field

from serin.operator.status import Notification


@dataclass(frozen=True)
class StartConversion:
    generation: int
    versionKey: str
    attempt: int


@dataclass(frozen=True)
class CancelConversion:
    generation: int
    versionKey: str
    attempt: int = 1


@dataclass(frozen=True)
class Served:
    """A version as the serving layer needs it: the model to serve, and the generation that names
    it (a Standard-mode predictor is `gen{generation}`)."""

    generation: int
    storageUri: str
    # The model's digest, as the trusted publish step of its conversion computed it: the runtime
    # refuses to serve bytes that do not match (a store that another writer reached). "" : unknown.
    # Not part of the identity: a storageUri names one conversion's output, hence one digest.
    sha256: str = field(default="", compare=False)


@dataclass(frozen=True)
class ApplyServing:
    """Serve `stable`, and `canary` at `weight` percent of the traffic when there is one. How
    (Knative's canaryTrafficPercent, KServe's spec.canary, an HTTPRoute) is the router's business;
    it moves there in safe steps of its own, each one idempotent."""

    stable: Served
    canary: Served | None = None
    weight: int = 0
    # The revision of a version being taken out (a rolled-back canary, once it has no traffic):
    # a router restoring the stable must never take that revision for the restored one.
    retiring: str = ""


@dataclass(frozen=True)
class Emit:
    type: str  # Normal | Warning
    reason: str
    message: str
    # A name fixed by what the Event tells (monitoring.event_name): posted twice, the second is
    # refused as a duplicate. "" for a generated name.
    name: str = ""
    # What within the Model the Event is about, when not the Model as a whole: the monitoring signal
    # of a drift or decay transition, the sink of a failed notification (notify.py reads it).
    about: str = ""


@dataclass(frozen=True)
class Deliver:
    """Send one pending notification (status.notifications) to its sink, unless it is on its way
    already; the outcome comes back to a later tick (notifier.py, notify.py)."""

    notification: Notification


@dataclass(frozen=True)
class CreateRetrainJob:
    """Create the Job `name` from spec.monitoring.retrain.template with `env` added to every
    container; AlreadyExists is success (reconcile.py)."""

    name: str
    env: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ClearAnnotation:
    key: str
    # The value acted upon: the annotation is removed only if it still holds it, so a newer command
    # written between the read and the removal is kept for the next tick ("" : removed whatever it holds).
    value: str = ""


Action = StartConversion | CancelConversion | ApplyServing | Emit | ClearAnnotation | Deliver | CreateRetrainJob
