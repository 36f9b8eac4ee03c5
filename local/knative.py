"""What Knative Serving does under a KServe InferenceService, as pure functions: revisions per
template change, the latest ready revision, route resolution, and condition bookkeeping.

Part of the KServe stand-in (serin.local), never imported by the operator. The Knative sources
these follow are cited where they apply:
- knative/serving pkg/reconciler/route/traffic/traffic.go (BuildTrafficConfiguration): a
  `latestRevision: true` target resolves to the Configuration's LatestReadyRevisionName; a named
  revision target must be ready; any unresolvable target fails the whole route, which then keeps
  serving what it served before.
- knative/pkg apis/condition_set.go: condition severity ("" for the happy condition and its
  dependents, "Info" for the rest), lastTransitionTime kept unless the condition changed,
  conditions sorted by type, False beats Unknown when the happy condition is derived.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]

# KServe copies the predictor into the Knative revision template; the canary percent goes into
# the route instead (ksvc_reconciler.go createKnativeService), so it never makes a revision.
ROUTE_ONLY_FIELDS = frozenset({"canaryTrafficPercent"})


@dataclass(frozen=True)
class Readiness:
    """A revision's Ready condition, as Knative's Revision reports it."""

    status: Status
    reason: str = ""
    message: str = ""

    @property
    def ready(self) -> bool:
        return self.status == "True"


PENDING = Readiness("Unknown", "Deploying", "")
READY = Readiness("True")


@dataclass(frozen=True)
class Revision:
    """One Knative Revision: an immutable snapshot of the predictor template."""

    name: str
    template: Mapping[str, Any]

    @property
    def storage_uri(self) -> str:
        return str((self.template.get("model") or {}).get("storageUri") or "")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "template": dict(self.template)}

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> Revision:
        return Revision(str(raw["name"]), dict(raw.get("template") or {}))


def template_of(predictor: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the predictor that Knative treats as the revision template (a deep copy: a
    revision is a snapshot and must not change with the object it was taken from)."""
    copy: dict[str, Any] = json.loads(json.dumps({k: v for k, v in predictor.items() if k not in ROUTE_ONLY_FIELDS}))
    return copy


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def revision_name(isvc: str, n: int) -> str:
    # Knative names generated revisions {configuration}-{generation:05d}; KServe's configuration
    # for the predictor is named {isvc}-predictor.
    return f"{isvc}-predictor-{n:05d}"


def plan_revisions(isvc: str, predictor: Mapping[str, Any], revisions: Sequence[Revision]) -> list[Revision]:
    """Appends a revision when the template differs from the latest created one (Knative creates
    a revision for every Configuration generation, even one equal to an older revision)."""
    template = template_of(predictor)
    out = list(revisions)
    if not out or not _same(out[-1].template, template):
        out.append(Revision(revision_name(isvc, _next_number(out)), template))
    return out


def _next_number(revisions: Sequence[Revision]) -> int:
    if not revisions:
        return 1
    try:
        return int(revisions[-1].name.rsplit("-", 1)[1]) + 1
    except (IndexError, ValueError):
        return len(revisions) + 1


def latest_ready(previous: str, latest_created: str, readiness: Mapping[str, Readiness]) -> str:
    """Knative's Configuration moves LatestReadyRevisionName forward only when the latest created
    revision becomes ready; a failed or pending newer revision leaves it where it was."""
    if readiness.get(latest_created, PENDING).ready:
        return latest_created
    return previous


# -- routes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A route spec traffic target (knative serving/v1 TrafficTarget, before resolution)."""

    percent: int
    latest: bool
    revision: str = ""
    tag: str = ""


@dataclass(frozen=True)
class RouteResult:
    traffic: list[dict[str, Any]] | None  # None: unresolvable, the route keeps its old traffic
    condition: Readiness = field(default=READY)


def resolve_route(targets: Iterable[Target], latest_ready_name: str, readiness: Mapping[str, Readiness],
                  route_host: str) -> RouteResult:
    """Flattens targets to revisions as traffic.go does, merging entries with the same revision,
    tag and latestRevision (mergeIfNecessary): a 10/90 canary whose latest revision is not ready
    yet shows the stable revision twice, once as latest and once as `prev`."""
    flat: list[dict[str, Any]] = []
    for t in targets:
        if t.latest:
            if not latest_ready_name:
                return RouteResult(None, Readiness(
                    "Unknown", "RevisionMissing",
                    f'Configuration "{route_host.split(".")[0]}" is waiting for a Revision to become ready.'))
            name = latest_ready_name
        else:
            name = t.revision
            state = readiness.get(name, PENDING)
            if not state.ready:
                status: Status = "False" if state.status == "False" else "Unknown"
                return RouteResult(None, Readiness(status, "RevisionMissing",
                                                   f'Revision "{name}" referenced in traffic not found.'))
        merged = False
        for entry in flat:
            if entry["revisionName"] == name and entry.get("tag", "") == t.tag and entry["latestRevision"] == t.latest:
                entry["percent"] += t.percent
                merged = True
        if not merged:
            entry = {"revisionName": name, "latestRevision": t.latest, "percent": t.percent}
            if t.tag:
                # GetRevisionTrafficTargets: a tagged target gets its own host, {tag}-{route}.
                entry = {"tag": t.tag, **entry, "url": f"http://{t.tag}-{route_host}"}
            flat.append(entry)
    return RouteResult(flat)


# -- conditions -------------------------------------------------------------------------------


@dataclass
class Conditions:
    """A knative LivingConditionSet over a list of condition dicts (apis.Condition JSON)."""

    happy: str
    dependents: tuple[str, ...]
    now: str
    previous: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    current: dict[str, dict[str, Any]] = field(default_factory=dict)

    def set(self, type_: str, state: Readiness) -> None:
        cond: dict[str, Any] = {"type": type_, "status": state.status}
        if type_ != self.happy and type_ not in self.dependents:
            cond["severity"] = "Info"
        if state.reason:
            cond["reason"] = state.reason
        if state.message:
            cond["message"] = state.message
        old = self.previous.get(type_)
        unchanged = old is not None and all(old.get(k) == cond.get(k)
                                            for k in ("status", "severity", "reason", "message"))
        cond["lastTransitionTime"] = old.get("lastTransitionTime", self.now) if unchanged and old else self.now
        self.current[type_] = cond

    def derive_happy(self) -> Readiness:
        """False beats Unknown beats True, over the dependents (condition_set.go markHappy)."""
        states = [self.current.get(d) for d in self.dependents]
        for wanted in ("False", "Unknown"):
            for cond in states:
                if cond is None and wanted == "Unknown":
                    return Readiness("Unknown")
                if cond is not None and cond["status"] == wanted:
                    return Readiness(wanted, cond.get("reason", ""), cond.get("message", ""))
        return READY

    def to_list(self) -> list[dict[str, Any]]:
        self.set(self.happy, self.derive_happy())
        return [self.current[k] for k in sorted(self.current)]


def all_of(*states: Readiness) -> Readiness:
    for wanted in ("False", "Unknown"):
        for s in states:
            if s.status == wanted:
                return s
    return READY
