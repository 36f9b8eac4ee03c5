"""Monitoring the serving version over time: (spec, status, counts, now) -> status and Events.

Pure. After a version is promoted (and while it stays the stable one, a rollout or not), every
`spec.monitoring.interval` the reconcile loop reads the counts its runtime exported since the
last evaluation, and those of the trailing window before it (monitoring_queries.py: the only
I/O); this module judges them with the detectors of sequential.py and says what changed.

- One evaluation needs `minRows` rows: with fewer, its window simply stays open (status
  unchanged, nothing written) until there are enough, or MAX_WAIT has passed.
- Each signal has one detector (inputDrift: one per profiled feature). All detectors of a Model
  share its monthly false-alarm budget: the threshold h makes D m e^-h equal it (sequential.py).
- An alarm is raised once per episode: Watching -> Alarm when a detector's CUSUM reaches h; it
  ends after `resolveAfter` evaluations in a row whose own counts are back within the tolerance
  (hysteresis: reaching the threshold needs evidence *beyond* the tolerance, ending it needs a
  window that looks within it); then a new episode may start from a zero CUSUM.
- Events are told on transitions only, each under a name fixed by (revision, signal, episode,
  transition): reconcile posts them before recording them as told, so a kill in between posts
  the same name again, which the apiserver refuses as a duplicate. One Event per transition.
- A silence (`serin silence`) keeps judging and keeps status true, and tells no one until it ends.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass, field, replace

import numpy as np
from serin.operator import sequential as sq
from serin.operator.actions import Emit
from serin.operator.spec import DRIFT_SIGNALS, BaselineSource, MonitoringSpec, Signal, SignalSpec
from serin.operator.status import Baseline, FeatureEvidence, Monitoring, SignalStatus, Version, from_time, to_time

WATCHING = "Watching"
ALARM = "Alarm"
NO_BASELINE = "NoBaseline"  # nothing to judge against (no reference in the profile, no feedback)

# An evaluation window that has not reached minRows is judged anyway after this long, so a
# low-traffic Model is still judged every day on what it had (validity never needed minRows: it
# only keeps each bet from being placed on a handful of rows).
MAX_WAIT = 24 * 3600.0
TOP_FEATURES = 3
MAX_CUSUM_ENTRIES = 64  # detectors whose CUSUM is kept in status (the largest): status stays small


@dataclass(frozen=True)
class Counts:
    """Rows counted over one window, exactly (differences of counters, monitoring_queries.py)."""

    rows: float = 0.0  # inference rows
    features: dict[str, dict[int, float]] = field(default_factory=dict)  # feature -> bin -> rows
    classes: dict[str, float] = field(default_factory=dict)  # predicted class -> rows
    requests: float = 0.0  # answered inference requests
    errors: float = 0.0  # of which 5xx
    latency: dict[float, float] = field(default_factory=dict)  # le -> requests at most that slow
    feedback_rows: float = 0.0  # ground truth received for this revision's answers
    feedback_correct: float = 0.0
    estimated_rows: float = 0.0
    estimated_correct: float = 0.0  # sum of the calibrated chance each answer is right


@dataclass(frozen=True)
class Reference:
    """What the serving version's profile expects (its runtime exports it)."""

    features: dict[str, dict[int, float]] = field(default_factory=dict)  # feature -> bin -> share
    classes: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None
    # The estimate's own reference when a rebaseline gave it one (None: `accuracy` stands for both).
    estimated_accuracy: float | None = None


@dataclass(frozen=True)
class MonitoringObservation:
    revision: str
    at: str  # the instant the counts were read up to
    window: Counts  # since status.monitoring.evaluatedAt
    trailing: Counts | None = None  # the trailing window before it (None: not read, too few rows)
    reference: Reference = field(default_factory=Reference)
    baseline: Counts | None = None  # a moving baseline's window (spec.monitoring.baseline; None: not read)
    baseline_error: str = ""  # why the moving baseline's window could not be read (the profile stands in)
    error: str = ""  # the counts could not be read: why


@dataclass(frozen=True)
class Outcome:
    monitoring: Monitoring | None
    emits: tuple[Emit, ...] = ()


def monitored_version(spec: MonitoringSpec, stable: Version | None, confirmed: bool) -> Version | None:
    if not spec.enabled or stable is None or not confirmed or not stable.revision:
        return None
    return stable


def _last_read(m: Monitoring, read_at: dt.datetime | None) -> dt.datetime | None:
    """When the counts were last read: the end of the last judged window, or a later read whose
    window stayed open (too few rows) or failed, which only the operator's memory knows (a status
    write per read would cost an idle Model a write per interval). After a restart the memory is
    empty: one read at once, then one per interval again."""
    judged = to_time(m.evaluatedAt)
    if judged is None or read_at is None:
        return judged
    return max(judged, read_at)


def due(spec: MonitoringSpec, m: Monitoring | None, stable: Version | None, now: dt.datetime,
        read_at: dt.datetime | None = None) -> bool:
    """Whether this tick should read the counts (the I/O `evaluate` judges)."""
    if m is None or stable is None or m.revision != stable.revision:
        return False
    last = _last_read(m, read_at)
    return last is not None and (now - last).total_seconds() >= spec.interval


def seconds_until_due(spec: MonitoringSpec, m: Monitoring | None, stable: Version | None,
                      now: dt.datetime, read_at: dt.datetime | None = None) -> float | None:
    if m is None or stable is None:
        return None
    if m.revision != stable.revision:
        return 0.0
    last = _last_read(m, read_at)
    return None if last is None else max(0.0, spec.interval - (now - last).total_seconds())


def window_seconds(m: Monitoring, at: dt.datetime) -> float:
    last = to_time(m.evaluatedAt)
    return (at - last).total_seconds() if last is not None else 0.0


TRAILING_WINDOWS = 10


def trailing_seconds(spec: MonitoringSpec, m: Monitoring) -> int:
    """The trailing window behind a bet: trailingWindow, or TRAILING_WINDOWS times the mean length
    of the windows judged so far when traffic is so low that windows span longer (they wait for
    minRows): a bet placed on a few hundred rows is mostly noise (bench/monitoring_bench.py
    measured 3 windows against 10). Known before the window's rows are read, as a bet must be:
    the current window's own length depends on its traffic."""
    started, judged = to_time(m.startedAt), to_time(m.evaluatedAt)
    mean = ((judged - started).total_seconds() / m.evaluations
            if started is not None and judged is not None and m.evaluations > 0 else 0.0)
    return int(max(spec.trailing, TRAILING_WINDOWS * mean, 1.0))


WEEK = 7 * 24 * 3600


def baseline_window(spec: MonitoringSpec, window_seconds: int) -> tuple[int, int] | None:
    """A moving baseline's window for an evaluation window of `window_seconds` ending now:
    (seconds before now it ends, its length); None for the profile. `trailing`: the `window`
    just before the evaluation's; `lastWeek`: `window` centred on the evaluation window's middle,
    seven days earlier."""
    b = spec.baseline
    length = int(b.window)
    if b.source == BaselineSource.TRAILING:
        return window_seconds, length
    if b.source == BaselineSource.LAST_WEEK:
        # At least the evaluation window's own span: a 6-hour window judged against 2 hours of last
        # week would meet another mix of hours.
        length = max(length, window_seconds)
        return max(0, WEEK + window_seconds // 2 - length // 2), length
    return None


def moving_reference(spec: MonitoringSpec, counts: Counts | None, fallback: Reference, error: str = ""
                     ) -> tuple[Reference, dict[Signal, str]]:
    """The drift reference of one evaluation: a moving baseline's shares when its window holds
    enough rows to stand for a reference (rows_needed: its noise within BASELINE_NOISE of the
    tolerance), else `fallback` (the profile, or a rebaseline); and, per drift signal, words for
    its message saying what it was judged against. `error`: the moving window could not be read."""
    source = spec.baseline.source
    if source == BaselineSource.PROFILE:
        return fallback, {}
    what = ("the trailing " if source == BaselineSource.TRAILING else "last week's ") + _hours(spec.baseline.window)
    if counts is None:
        why = f"{what} could not be read: {error}" if error else f"{what} was not read"
        return fallback, {Signal.INPUT_DRIFT: f"against the profile ({why})",
                          Signal.PREDICTION_SHIFT: f"against the profile ({why})"}

    def note(short: int, judged: int) -> str:
        if not short:
            return f"against {what}"
        if short == judged:
            return f"against the profile ({what} had too few rows)"
        return f"against {what}, the profile where it had too few rows ({short} of {judged} features)"

    features: dict[str, dict[int, float]] = dict(fallback.features)
    drift = spec.signals.get(Signal.INPUT_DRIFT)
    short = 0
    for name, profile_bins in fallback.features.items():
        bins = counts.features.get(name, {})
        total = sum(max(v, 0.0) for v in bins.values())
        width = max(len(profile_bins), max(bins, default=-1) + 1)
        if drift is None or total < rows_needed(width, drift.tolerance):
            short += 1
            continue
        features[name] = {b: max(bins.get(b, 0.0), 0.0) / total for b in range(width)}
    classes = dict(fallback.classes)
    shift = spec.signals.get(Signal.PREDICTION_SHIFT)
    total = sum(max(v, 0.0) for v in counts.classes.values())
    names = sorted(set(fallback.classes) | set(counts.classes))
    used = shift is not None and len(names) > 1 and total >= rows_needed(len(names), shift.tolerance)
    if used:
        classes = {c: max(counts.classes.get(c, 0.0), 0.0) / total for c in names}
    notes = {Signal.INPUT_DRIFT: note(short, len(fallback.features)),
             Signal.PREDICTION_SHIFT: note(0 if used else 1, 1)}
    return replace(fallback, features=features, classes=classes), notes


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g}h" if seconds >= 3600 else f"{seconds / 60:g}m"


def enough(spec: MonitoringSpec, m: Monitoring, window: Counts, at: dt.datetime) -> bool:
    """Whether a window's counts are judged now, or it stays open for more rows."""
    return window.rows >= spec.min_rows or (window_seconds(m, at) >= MAX_WAIT and window.rows > 0)


def evaluate(spec: MonitoringSpec, m: Monitoring | None, stable: Version | None, obs: MonitoringObservation | None,
             now: dt.datetime, model: str, silenced_until: str | None = None) -> Outcome:
    """The monitoring status after this tick, and the Events it tells."""
    now_s = from_time(now) or ""
    if stable is None:
        return Outcome(None)
    emits: list[Emit] = []
    if m is None or m.revision != stable.revision:
        if m is not None:
            emits += _ended_by_replacement(m, stable, model, now)
        # Whole seconds: windows are read as integer offsets from this instant (monitoring_queries.py).
        start = from_time(now.replace(microsecond=0)) or ""
        m = Monitoring(revision=stable.revision, generation=stable.generation, startedAt=start, evaluatedAt=start,
                       health="Waiting")
    if silenced_until is not None:
        m = replace(m, silencedUntil=silenced_until)
    if obs is None or obs.revision != m.revision:
        return Outcome(m, tuple(emits) + _untold(m, model, now))
    if obs.error:
        # Told and written once per kind of trouble ("prometheus unreachable", "prometheus busy"),
        # not each time its details change: an outage must not write every Model's status per tick.
        if _kind(obs.error) != _kind(m.problem):
            emits.append(Emit("Warning", "MonitoringInconclusive",
                              f"revision {m.revision}: monitoring could not read its counts: {obs.error}"))
            m = replace(m, problem=obs.error)
        return Outcome(m, tuple(emits) + _untold(m, model, now))
    at = to_time(obs.at) or now
    if m.problem:
        m = replace(m, problem="")  # read again: what was told is over
    if not enough(spec, m, obs.window, at):
        if window_seconds(m, at) >= MAX_WAIT:  # no rows at all for a day: start a new window
            m = replace(m, evaluatedAt=obs.at)
        return Outcome(m, tuple(emits) + _untold(m, model, now))

    active = spec.active()
    trailing = obs.trailing or Counts()
    reference = effective_reference(m, obs.reference)
    drift_reference, against = moving_reference(spec, obs.baseline, reference, obs.baseline_error)
    per_month = sq.SECONDS_PER_MONTH / max(spec.interval, 1.0)
    judged = {name: s for name, s in active.items()
              if _has_baseline(name, s, drift_reference if name in DRIFT_SIGNALS else reference)}
    detectors = sum(len(drift_reference.features) if name == Signal.INPUT_DRIFT else 1
                    for name, s in judged.items() if not s.dry_run)
    h = sq.threshold(max(detectors, 1), per_month, spec.false_alarms_per_month)
    signals = []
    for name, s in active.items():
        before = m.signal(name)
        if name not in judged:
            # An alarm, or evidence, is kept through a read that lacks the reference (a runtime
            # restarting between scrapes): only a signal never judged says NoBaseline.
            signals.append(before if before is not None and before.state != NO_BASELINE
                           else _no_baseline(name, s, before, now_s))
            continue
        drift = name in DRIFT_SIGNALS
        signals.append(_judge(name, s, spec, before, obs.window, trailing, drift_reference if drift else reference, h,
                              now_s, against.get(name, "")))
    m = replace(m, evaluatedAt=obs.at, evaluations=m.evaluations + 1, threshold=round(h, 3), problem="",
                signals=tuple(signals))
    m = replace(m, health=health(m))
    return Outcome(m, tuple(emits) + _untold(m, model, now))


# -- serin rebaseline ---------------------------------------------------------------------------

# A baseline taken from live traffic is an estimate: n rows over B bins put it about (B - 1) / 2n
# of KL away from the distribution they came from, which the tolerance then no longer has room
# for. So a rebaseline needs enough rows that this uses at most BASELINE_NOISE of the tolerance
# (10 bins, tolerance 0.02: 4,500 rows), and never fewer than BASELINE_MIN_ROWS.
BASELINE_NOISE = 0.05
BASELINE_MIN_ROWS = 1000
# Accuracy from a window: the lower end of a 95 % Wilson interval (at least this many rows with
# ground truth, or estimated), so that the estimate's own noise cannot raise the limit.
BASELINE_MIN_ACCURACY_ROWS = 500
ACCURACY_NOISE = 0.25  # of the tolerated drop: the most an accuracy baseline's interval may span
_Z95 = 1.96
# Status stays within tens of kilobytes (the CRD's status schema holds these bounds too).
MAX_BASELINE_FEATURES, MAX_BASELINE_BINS, MAX_BASELINE_CLASSES = 512, 256, 1024
MAX_BASELINE_NUMBERS = 20_000  # bins of all features together: about 200 KB of status at most
MAX_BASELINE_WINDOW = 31 * 24 * 3600.0


@dataclass(frozen=True)
class RebaselineRequest:
    """What `serin rebaseline` asked (the annotation, parsed): the generation it means and the
    traffic to accept, [start, end], read by the operator before deciding (reconcile.py)."""

    generation: int
    start: str
    end: str
    reason: str = ""


@dataclass(frozen=True)
class RebaselineObservation:
    request: RebaselineRequest
    counts: Counts | None = None  # the window's rows (None: not read)
    reference: Reference = field(default_factory=Reference)  # the profile's, for the message
    error: str = ""


def parse_rebaseline(raw: str, now: dt.datetime) -> RebaselineRequest | str:
    """The annotation's JSON `{"generation", "start", "end", "reason"}`, or why it is refused."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return "not JSON: use serin rebaseline"
    if not isinstance(doc, dict):
        return "not a JSON object: use serin rebaseline"
    start, end = _instant(doc.get("start")), _instant(doc.get("end"))
    generation = doc.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or start is None or end is None:
        return "it needs an integer generation and RFC 3339 start and end"
    seconds = (end - start).total_seconds()
    if not 0 < seconds <= MAX_BASELINE_WINDOW:
        return f"its window must be longer than 0s and at most {MAX_BASELINE_WINDOW / 86400:.0f} days"
    if end > now + dt.timedelta(minutes=5):
        return f"its window ends in the future ({doc.get('end')})"
    reason = str(doc.get("reason") or "")[:256]
    return RebaselineRequest(generation, from_time(start) or "", from_time(end) or "", reason)


def _instant(value: object) -> dt.datetime | None:
    try:
        t = to_time(value) if isinstance(value, str) and value else None
    except ValueError:
        return None
    return t if t is not None and t.tzinfo is not None else None


def effective_reference(m: Monitoring, profile: Reference) -> Reference:
    """What the serving version is judged against: its profile, with whatever `serin rebaseline`
    accepted in its place (bins and classes as shares, accuracy as its lower bound)."""
    b = m.baseline
    if b is None:
        return profile
    features = {f: dict(enumerate(shares)) for f, shares in b.features.items()} if b.features else profile.features
    return Reference(features, dict(b.classes) if b.classes else profile.classes,
                     b.accuracy if b.accuracy is not None else profile.accuracy,
                     b.estimatedAccuracy if b.estimatedAccuracy is not None else profile.estimated_accuracy)


def _wilson_lower(successes: float, n: float) -> float:
    p = successes / n
    z2 = _Z95 * _Z95
    centre = p + z2 / (2 * n)
    spread = _Z95 * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0))
    return max(0.0, (centre - spread) / (1 + z2 / n))


def rows_needed(bins: int, tolerance: float) -> int:
    """Rows a baseline over `bins` bins needs for its noise to use at most BASELINE_NOISE of `tolerance`."""
    return max(BASELINE_MIN_ROWS, math.ceil((max(bins, 2) - 1) / (2 * BASELINE_NOISE * tolerance)))


def accuracy_rows_needed(share: float, tolerance: float) -> int:
    """Rows a window needs for its accuracy's 95 % interval to span at most ACCURACY_NOISE of the
    tolerated drop on either side (0.9 accurate, tolerance 0.03: about 6,100)."""
    variance = max(share * (1 - share), 0.01)
    return max(BASELINE_MIN_ACCURACY_ROWS, math.ceil(_Z95 * _Z95 * variance / (ACCURACY_NOISE * tolerance) ** 2))


def rebaseline(spec: MonitoringSpec, m: Monitoring, obs: RebaselineObservation, now: dt.datetime
               ) -> tuple[Monitoring, tuple[Emit, ...]]:
    """Accept the traffic of the request's window as the reference of the signals it can stand
    for: drift (every feature's bins, the predicted classes or values), accuracy from ground truth
    and the estimate's reference, each from its own rows and only where the spec judges against a
    reference (no `min`). Their detectors start from nothing, an alarm among them ends (told as
    ended by the rebaseline); the others keep judging as before. Refused, with a Warning, when the
    window cannot stand for a drift reference (too few rows, too large for status); a request
    already applied is not applied twice (a restart between the status write and the annotation's
    removal)."""
    req = obs.request
    if m.baseline is not None and (m.baseline.start, m.baseline.end) == (req.start, req.end):
        return m, ()

    def refused(why: str) -> tuple[Monitoring, tuple[Emit, ...]]:
        return m, (Emit("Warning", "RebaselineRefused", f"revision {m.revision}: the traffic of {req.start} .. "
                                                          f"{req.end} was not made the baseline: {why}"),)

    if obs.error:
        return refused(f"its counts could not be read ({obs.error}); run serin rebaseline again")
    counts = obs.counts or Counts()
    active = spec.active()
    features: dict[str, list[float]] = {}
    drift = active.get(Signal.INPUT_DRIFT)
    if drift is not None:
        if len(counts.features) > MAX_BASELINE_FEATURES:
            return refused(f"{len(counts.features)} features, more than {MAX_BASELINE_FEATURES} fit in status; "
                           "roll out a version converted with a new sample instead")
        numbers = 0
        for name, bins in sorted(counts.features.items()):
            total = sum(max(v, 0.0) for v in bins.values())
            width = max(max(bins, default=-1) + 1, len(obs.reference.features.get(name, {})))
            numbers += width
            if width > MAX_BASELINE_BINS or numbers > MAX_BASELINE_NUMBERS:
                return refused(f"more than {MAX_BASELINE_BINS} bins in feature {name}, or more than "
                               f"{MAX_BASELINE_NUMBERS} bins in all, do not fit in status")
            need = rows_needed(width, drift.tolerance)
            if total < need:
                return refused(f"feature {name} has {total:.0f} rows in it; a baseline of {width} bins needs "
                               f"{need} (its noise must use at most {BASELINE_NOISE:.0%} of the tolerance "
                               f"{drift.tolerance:g}): choose a longer window")
            features[name] = [round(max(bins.get(b, 0.0), 0.0) / total, 6) for b in range(width)]
        if not features:
            return refused("no rows with features were counted in it (runtimes restarted inside it are left out)")
    classes: dict[str, float] = {}
    shift = active.get(Signal.PREDICTION_SHIFT)
    total_classes = sum(max(v, 0.0) for v in counts.classes.values())
    if shift is not None and len(counts.classes) > MAX_BASELINE_CLASSES:
        return refused(f"{len(counts.classes)} predicted classes, more than {MAX_BASELINE_CLASSES}")
    if shift is not None and len(counts.classes) > 1:
        need = rows_needed(len(counts.classes), shift.tolerance)
        if total_classes < need:
            return refused(f"{total_classes:.0f} predictions in it; {len(counts.classes)} classes need {need}")
        classes = {c: round(max(v, 0.0) / total_classes, 6) for c, v in sorted(counts.classes.items())}
    # Accuracy: each signal from its own rows (ground truth; the estimate), only where it is judged
    # against a reference (a `min` does not move), and only with rows enough for its interval.
    kept: list[str] = []
    levels: dict[Signal, float] = {}
    # A regressor's truth is scored as errors, not right or wrong: no accuracy to take from it.
    regressor = bool(counts.classes) and all(c.startswith("value ") for c in counts.classes)
    for signal, correct, rows in ((Signal.ACCURACY, counts.feedback_correct, counts.feedback_rows),
                                  (Signal.ESTIMATED_ACCURACY, counts.estimated_correct, counts.estimated_rows)):
        s = active.get(signal)
        if s is None or s.minimum is not None or regressor:
            continue
        need = accuracy_rows_needed(correct / rows if rows > 0 else 0.9, s.tolerance)
        if rows < need:
            kept.append(f"{signal} kept its reference ({rows:.0f} rows in the window, {need} needed)")
            continue
        levels[signal] = round(_wilson_lower(correct, rows), 4)
    if not features and not classes and not levels:
        return refused("nothing in it can stand for a reference" + (f": {'; '.join(kept)}" if kept else ""))
    now_s = from_time(now) or ""
    replaced = [str(x) for x, done in ((Signal.INPUT_DRIFT, bool(features)), (Signal.PREDICTION_SHIFT, bool(classes)),
                                       (Signal.ACCURACY, Signal.ACCURACY in levels),
                                       (Signal.ESTIMATED_ACCURACY, Signal.ESTIMATED_ACCURACY in levels)) if done]
    # What this window does not replace keeps the reference it had: an earlier rebaseline's, or
    # the profile's (absent here).
    before = m.baseline or Baseline("", "", "")
    baseline = Baseline(req.start, req.end, now_s, round(counts.rows), req.reason, features or before.features,
                        classes or before.classes, levels.get(Signal.ACCURACY, before.accuracy),
                        levels.get(Signal.ESTIMATED_ACCURACY, before.estimatedAccuracy),
                        sorted(set(replaced) | set(before.signals)))
    words = f"rebaselined to the traffic of {req.start} .. {req.end} ({counts.rows:.0f} rows)"
    if req.reason:
        words += f": {req.reason}"
    signals = []
    for x in m.signals:
        if x.signal not in replaced:
            signals.append(x)
            continue
        # From nothing, against the new reference: an alarm ends (told as such), evidence is dropped.
        state_since = x.since if x.state == WATCHING else now_s
        signals.append(replace(x, state=WATCHING, since=state_since, evidence=0.0, cusum={}, calm=0, worst=(),
                               message=words))
    m = replace(m, baseline=baseline, signals=tuple(signals))
    m = replace(m, health=health(m))
    details = [f"{k} {v:.4f} (the lower end of its 95 % interval)" for k, v in levels.items()] + kept
    told = f"revision {m.revision}: {', '.join(replaced)} {words}" + (f"; {'; '.join(details)}" if details else "")
    return m, (Emit("Normal", "MonitoringRebaselined", told),)


def _kind(problem: str) -> str:
    return problem.split(":", 1)[0]


# -- one signal ----------------------------------------------------------------------------------


def _has_baseline(name: Signal, s: SignalSpec, ref: Reference) -> bool:
    if name == Signal.INPUT_DRIFT:
        return bool(ref.features)
    if name == Signal.PREDICTION_SHIFT:
        return len(ref.classes) > 1
    if name in (Signal.ACCURACY, Signal.ESTIMATED_ACCURACY):
        return s.minimum is not None or _reference_accuracy(name, ref) is not None
    return True


def _reference_accuracy(name: Signal, ref: Reference) -> float | None:
    """The accuracy a signal's drop is measured from: the estimate's own when a rebaseline gave it one."""
    if name == Signal.ESTIMATED_ACCURACY and ref.estimated_accuracy is not None:
        return ref.estimated_accuracy
    return ref.accuracy


def _no_baseline(name: Signal, s: SignalSpec, before: SignalStatus | None, now: str) -> SignalStatus:
    why = {Signal.INPUT_DRIFT: "the reference profile has no features",
           Signal.PREDICTION_SHIFT: "the reference profile has no predicted classes or value bins (one class, or a "
                                    "regressor's profile without cuts)",
           }.get(name, "no min given and the reference profile has no accuracy (sampleLabels)")
    since = before.since if before is not None and before.state == NO_BASELINE else now
    return SignalStatus(str(name), NO_BASELINE, since, 0.0, why, before.episode if before else 0,
                        before.announced if before else "", dryRun=s.dry_run or None)


@dataclass(frozen=True)
class _Judged:
    cusum: dict[str, float]  # detector -> CUSUM after this evaluation
    within: bool | None  # this window's own counts are within the tolerance (None: it has none)
    message: str  # the measurement, in words
    worst: tuple[FeatureEvidence, ...] = ()


def _judge(name: Signal, s: SignalSpec, spec: MonitoringSpec, before: SignalStatus | None, window: Counts,
           trailing: Counts, ref: Reference, h: float, now: str, against: str = "") -> SignalStatus:
    previous = dict(before.cusum) if before is not None else {}
    if name in DRIFT_SIGNALS:
        judged = _drift(name, s, previous, window, trailing, ref, h)
        if against:
            judged = replace(judged, message=f"{judged.message}; {against}")
    else:
        judged = _rate(name, s, previous, window, trailing, ref)
    top = max(judged.cusum.values(), default=0.0)
    state = before.state if before is not None and before.state != NO_BASELINE else WATCHING
    since = before.since if before is not None and before.state == state else now
    episode = before.episode if before is not None else 0
    calm = before.calm if before is not None else 0
    cusum = judged.cusum
    if state == WATCHING and top >= h and not s.dry_run:
        state, since, episode, calm = ALARM, now, episode + 1, 0
        cusum = {}  # the next episode starts from nothing
    elif state == ALARM:
        if judged.within is not None:  # a window without rows of this signal (no feedback) says nothing
            calm = calm + 1 if judged.within else 0
        cusum = {}
        if calm >= spec.resolve_after:
            state, since, calm = WATCHING, now, 0
    elif s.dry_run and top >= h:
        cusum = {}  # a dry-run alarm: recorded by evidence 1 and the message, then starts over
    floored = {k: math.floor(v * 1000) / 1000 for k, v in cusum.items()}  # down: never more evidence
    kept = dict(sorted(((k, v) for k, v in floored.items() if v > 0), key=lambda kv: -kv[1])[:MAX_CUSUM_ENTRIES])
    message = judged.message
    if s.dry_run and top >= h:
        message = f"dry run: would raise an alarm: {message}"
    return SignalStatus(str(name), state, since, round(top / h, 4) if h > 0 else 0.0, message, episode,
                        before.announced if before is not None else "", calm, s.dry_run or None,
                        kept, judged.worst)


def _drift(name: Signal, s: SignalSpec, previous: dict[str, float], window: Counts, trailing: Counts,
           ref: Reference, h: float) -> _Judged:
    if name == Signal.INPUT_DRIFT:
        keys = sorted(ref.features)
        refs = [ref.features[k] for k in keys]
        live = [window.features.get(k, {}) for k in keys]
        past = [trailing.features.get(k, {}) for k in keys]
    else:
        keys = [""]
        refs = [{i: share for i, share in enumerate(ref.classes.values())}]
        order = list(ref.classes)
        others = sum(v for c, v in window.classes.items() if c not in ref.classes)
        live = [{i: window.classes.get(c, 0.0) for i, c in enumerate(order)}]
        past = [{i: trailing.classes.get(c, 0.0) for i, c in enumerate(order)}]
        if others:  # a class the reference never predicted: its own bin, expected at the floor
            live[0][len(order)] = others
            refs[0] = {**refs[0], len(order): 0.0}
            past[0][len(order)] = sum(v for c, v in trailing.classes.items() if c not in ref.classes)
    bins = max((max(r, default=-1) + 1 for r in refs), default=0)
    bins = max(bins, max((max(x, default=-1) + 1 for x in live), default=0))

    def matrix(rows: list[dict[int, float]]) -> np.ndarray:
        out = np.zeros((len(rows), max(bins, 1)))
        for i, row in enumerate(rows):
            for b, v in row.items():
                if 0 <= b < out.shape[1]:
                    out[i, b] = max(v, 0.0)
        return out

    p, counts, trail = matrix(refs), matrix(live), matrix(past)
    bet = sq.categorical_bet(trail, p, s.tolerance)
    log_e = bet.log_e(counts)
    now_psi = sq.trailing_psi(counts, p)
    cusum = {k: sq.cusum(previous.get(k, 0.0), float(e)) for k, e in zip(keys, log_e, strict=True)}
    seen = counts.sum(axis=1) > 0  # a feature without rows in this window says nothing of itself
    within = bool(np.all(now_psi[seen] <= s.tolerance)) if seen.any() else None
    ranked = sorted(range(len(keys)), key=lambda i: (-cusum[keys[i]], -now_psi[i]))
    worst = tuple(FeatureEvidence(keys[i], round(cusum[keys[i]] / h, 4), round(float(now_psi[i]), 4))
                  for i in ranked[:TOP_FEATURES]) if name == Signal.INPUT_DRIFT else ()
    i = ranked[0]
    what = (f"feature {keys[i]}" if name == Signal.INPUT_DRIFT else
            "predicted values" if any(c.startswith("value ") for c in ref.classes) else "predicted classes")
    message = (f"{what}: PSI {now_psi[i]:.3g} over the last {counts[i].sum():.0f} rows (tolerance {s.tolerance:g}); "
               f"evidence {cusum[keys[i]]:.3g} of {h:.3g} needed")
    return _Judged(cusum, within, message, worst)


def _rate(name: Signal, s: SignalSpec, previous: dict[str, float], window: Counts, trailing: Counts,
          ref: Reference) -> _Judged:
    """A share of rows above its limit: errors, slow answers, wrong answers, expected wrong answers."""
    limit, events, rows, past_events, past_rows, what = _share(name, s, window, trailing, ref)
    if limit is None or not 0 < limit < 1:
        return _Judged({}, True, f"no limit in (0, 1) to judge {name} against")
    bet = sq.rate_bet(past_events, past_rows, limit)
    cusum = {"": sq.cusum(previous.get("", 0.0), bet.log_e(events, rows))}
    share = events / rows if rows > 0 else 0.0
    message = f"{what} {share:.3g} over {rows:.0f} (limit {limit:.3g}); evidence {cusum['']:.3g}"
    return _Judged(cusum, None if rows <= 0 else share <= limit, message)


def _share(name: Signal, s: SignalSpec, w: Counts, t: Counts, ref: Reference
           ) -> tuple[float | None, float, float, float, float, str]:
    """(limit, events, rows, trailing events, trailing rows, what the share is) of a rate signal."""
    if name == Signal.ERROR_RATE:
        return s.tolerance, w.errors, w.requests, t.errors, t.requests, "share of 5xx answers"
    if name == Signal.LATENCY:
        le = _bucket_at_least(w.latency or t.latency, s.threshold_seconds)
        if le is None:
            return None, 0, 0, 0, 0, ""

        def slow(c: Counts) -> float:
            return max(c.requests - c.latency.get(le, 0.0), 0.0) if c.latency else 0.0
        return (s.tolerance, slow(w), w.requests if w.latency else 0.0, slow(t), t.requests if t.latency else 0.0,
                f"share of answers slower than {le:g}s")
    floor = s.minimum if s.minimum is not None else (_reference_accuracy(name, ref) or 0.0) - s.tolerance
    limit = 1.0 - floor  # the share of wrong answers tolerated
    if name == Signal.ACCURACY:
        return (limit, w.feedback_rows - w.feedback_correct, w.feedback_rows,
                t.feedback_rows - t.feedback_correct, t.feedback_rows, "share of wrong answers (ground truth)")
    return (limit, w.estimated_rows - w.estimated_correct, w.estimated_rows,
            t.estimated_rows - t.estimated_correct, t.estimated_rows, "estimated share of wrong answers")


def _bucket_at_least(buckets: dict[float, float], seconds: float) -> float | None:
    """The latency bucket bound at or just above the SLO threshold (a request counts as slow when
    it is slower than that bound: never more than the threshold's own share)."""
    finite = sorted(le for le in buckets if math.isfinite(le) and le >= seconds - 1e-12)
    return finite[0] if finite else None


# -- telling people ------------------------------------------------------------------------------


def _told(x: SignalStatus) -> str:
    return f"{x.state}/{x.episode}"


def _untold(m: Monitoring, model: str, now: dt.datetime) -> tuple[Emit, ...]:
    """The Events for transitions not told yet (reconcile marks them told once posted)."""
    silenced = (to_time(m.silencedUntil) or now) > now if m.silencedUntil else False
    out = []
    for x in m.signals:
        if x.dryRun or x.state == NO_BASELINE or x.announced == _told(x):
            continue
        if x.state == WATCHING and not x.announced.startswith(ALARM):
            continue  # nothing was raised: nothing to resolve
        if silenced:
            continue  # marked told all the same (mark_told): a silence does not queue Events for later
        drift = x.signal in DRIFT_SIGNALS
        if x.state == ALARM:
            reason = "DriftDetected" if drift else "PerformanceDegraded"
            text = f"revision {m.revision}: {x.signal} alarm (episode {x.episode}): {x.message}"
            out.append(Emit("Warning", reason, text, event_name(model, m, x.signal, x.episode, "raised"), x.signal))
        else:
            reason = "DriftResolved" if drift else "PerformanceRecovered"
            b = m.baseline
            if b is not None and x.signal in b.signals and x.since == b.takenAt:  # ended by `serin rebaseline`
                text = (f"revision {m.revision}: {x.signal} alarm ended (episode {x.episode}): rebaselined to the "
                        f"traffic of {b.start} .. {b.end}{f': {b.reason}' if b.reason else ''}")
            else:
                text = f"revision {m.revision}: {x.signal} back within tolerance (episode {x.episode}): {x.message}"
            out.append(Emit("Normal", reason, text, event_name(model, m, x.signal, x.episode, "ended"), x.signal))
    return tuple(out)


def _ended_by_replacement(m: Monitoring, stable: Version, model: str, now: dt.datetime) -> list[Emit]:
    """The told alarms of a revision that no longer serves, ended. At most once: the status that
    drops them is written before these are posted (a kill in between loses them)."""
    if m.silencedUntil and (to_time(m.silencedUntil) or now) > now:
        return []
    out = []
    for x in m.signals:
        if x.state == ALARM and x.announced == _told(x):
            drift = x.signal in DRIFT_SIGNALS
            out.append(Emit("Normal", "DriftResolved" if drift else "PerformanceRecovered",
                            f"revision {m.revision}: {x.signal} alarm (episode {x.episode}) ended: revision "
                            f"{stable.revision} (generation {stable.generation}) serves instead",
                            event_name(model, m, x.signal, x.episode, "ended"), x.signal))
    return out


def mark_told(m: Monitoring | None) -> Monitoring | None:
    """The status once this tick's Events were posted (or silenced): every transition told."""
    if m is None:
        return None
    return replace(m, signals=tuple(replace(x, announced=_told(x)) if x.state != NO_BASELINE else x
                                    for x in m.signals))


def untold(m: Monitoring | None) -> bool:
    return m is not None and any(x.state != NO_BASELINE and not x.dryRun and x.announced != _told(x)
                                 and (x.state == ALARM or x.announced.startswith(ALARM)) for x in m.signals)


def event_name(model: str, m: Monitoring, signal: str, episode: int, transition: str) -> str:
    """A name fixed by what the Event tells, so posting it twice is refused as a duplicate. The
    monitoring's start is part of it: a Model re-created under its name, or monitoring turned off
    and on again, counts episodes from 1 again and must not collide with the old Events."""
    told = f"{m.revision}/{m.startedAt}/{signal}/{episode}/{transition}"
    digest = hashlib.sha256(told.encode()).hexdigest()[:16]
    return f"{model[:200].rstrip('-.')}.monitoring.{digest}"


# -- conditions ----------------------------------------------------------------------------------


def conditions(m: Monitoring | None) -> list[tuple[str, str, str, str]]:
    """Drifted and PerformanceDegraded: (type, status, reason, message). Reasons name the signal."""
    out = []
    for kind, names in (("Drifted", DRIFT_SIGNALS), ("PerformanceDegraded", None)):
        mine = [x for x in (m.signals if m else ()) if (x.signal in DRIFT_SIGNALS) == (names is not None)
                and not x.dryRun]
        alarms = [x for x in mine if x.state == ALARM]
        judged = [x for x in mine if x.state != NO_BASELINE]
        if m is None:
            out.append((kind, "Unknown", "NotMonitored", "no serving version is monitored"))
        elif alarms:
            first = alarms[0]
            reason = {"inputDrift": "InputDrift", "predictionShift": "PredictionShift", "errorRate": "ErrorRate",
                      "latency": "Latency", "accuracy": "Accuracy",
                      "estimatedAccuracy": "EstimatedAccuracy"}.get(first.signal, first.signal)
            out.append((kind, "True", reason, "; ".join(f"{x.signal}: {x.message}" for x in alarms)))
        elif m.problem:
            out.append((kind, "Unknown", "Inconclusive", f"revision {m.revision}: {m.problem}"))
        elif m.evaluations == 0:
            out.append((kind, "Unknown", "NotEvaluated", f"revision {m.revision}: waiting for traffic to judge"))
        elif not judged:
            out.append((kind, "Unknown", "NoBaseline", f"revision {m.revision}: nothing to judge these against"))
        else:
            out.append((kind, "False", "WithinTolerance", f"revision {m.revision}: {m.evaluations} evaluations"))
    return out


def health(m: Monitoring | None) -> str:
    """One word for `kubectl get models`: Healthy, Drifted, Degraded, Waiting ("" unmonitored)."""
    if m is None:
        return ""
    alarms = [x for x in m.signals if x.state == ALARM and not x.dryRun]
    if any(x.signal in DRIFT_SIGNALS for x in alarms):
        return "Drifted"
    if alarms:
        return "Degraded"
    return "Healthy" if m.evaluations else "Waiting"
