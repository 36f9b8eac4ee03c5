"""One reconcile tick for one Model: observe → decide (pure) → persist status → act.

Persisting before acting is what makes a kill at any point safe: every action is idempotent and
derived from the persisted status, so the next tick (of this or another operator) replays
whatever did not happen, and nothing that did happen is decided twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes_asyncio.client.rest import ApiException
from serin.operator import monitoring, monitoring_queries, notify, opmetrics, queries, retrain
from serin.operator.actions import (
    Action,
    ApplyServing,
    CancelConversion,
    ClearAnnotation,
    CreateRetrainJob,
    Deliver,
    Emit,
    StartConversion,
)
from serin.operator.executors import ConversionExecutor, ConversionRequest
from serin.operator.feedback_secret import SecretCheck
from serin.operator.kube import Conflict, Kube, api_message, owner_reference
from serin.operator.notifier import Notifier
from serin.operator.observations import MeasuredValue, Observations
from serin.operator.policy import DEFAULT as DEFAULT_POLICY
from serin.operator.policy import Policy
from serin.operator.prometheus import MetricProvider
from serin.operator.queries import QueryContext, lifetime_for, render, sample_query, value_buckets_query, window_for
from serin.operator.rollout import REBASELINE_ANNOTATION, Decision, analysis_due, decide, is_idle, next_due
from serin.operator.routing import Router, Routing, Seen, Write
from serin.operator.routing.base import Op
from serin.operator.routing.standard import PREDICTOR_PORT, deployment_name, route_name, split_service_name
from serin.operator.spec import Builtin, MetricSpec, ModelSpec, MonitoringSpec, SinkSpec, parse_spec
from serin.operator.status import CanaryState, Monitoring, Status, from_time, status_from_dict, status_to_dict, to_time
from serin.runtime import metric_names as mn

log = logging.getLogger("serin.reconcile")

# Failpoints (as etcd's gofail): "before-persist:REASON" or "after-persist:REASON" makes the process
# exit abruptly (like SIGKILL) at that point of the tick that emits Event REASON. Tests use it to
# kill the operator at exact points of a rollout; unset, it costs one string comparison.
FAILPOINT = os.environ.get("SERIN_FAILPOINT", "")
QUEUE_REFRESH = 30.0  # a queued conversion's position in status is refreshed this often


def _failpoint(stage: str, decision: Decision) -> None:
    if not FAILPOINT.startswith(stage + ":"):
        return
    reason = FAILPOINT.split(":", 1)[1]
    if any(isinstance(a, Emit) and a.reason == reason for a in decision.actions):
        log.warning("failpoint %s: exiting", FAILPOINT)
        logging.shutdown()
        os._exit(137)


@dataclass
class Deps:
    kube: Kube
    executor: ConversionExecutor
    metrics: MetricProvider
    routing: Routing = field(default_factory=Routing)
    # The serving layer's last refusal of a write, per Model (a webhook's 4xx): fed to the next
    # tick's observation, so the decision says why in status instead of retrying blindly.
    rejected: dict[tuple[str, str], str] = field(default_factory=dict)
    # What the cluster admin requires of every Model (serin operator --require-analysis).
    policy: Policy = field(default_factory=Policy)
    # Per Model, its feedback Secret when it was last found unusable, and when: told in status by
    # the next ticks, checked again when due (feedback_secret.py), forgotten once usable.
    secrets: dict[tuple[str, str], tuple[SecretCheck, dt.datetime]] = field(default_factory=dict)
    # Per Model, when its monitoring last read the counts (monitoring._last_read): a window left
    # open for more rows, or a failed read, is tried again an interval later, not at once.
    monitor_reads: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    # Notifications (notify.py): the sender, the chart's sinks (every Model's unless its spec says
    # includeDefaults: false), and the back-off between attempts. No notifier: nothing is sent
    # (notifications still wait in status, for an operator that has one).
    notifier: Notifier | None = None
    notify_defaults: tuple[SinkSpec, ...] = ()
    notify_retry: notify.RetryPolicy = field(default_factory=notify.RetryPolicy)
    # Per Model, the retraining Job the last create was for, and the apiserver's refusal ("" : created
    # or there already): the next tick's observation (retrain.py), and the prompt record of jobSeen.
    retrain_jobs: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)


async def read_serving(kube: Kube, router: Router, namespace: str, name: str,
                       isvc: dict[str, Any] | None, idle: bool = False, uid: str = "") -> Seen:
    kinds = router.kinds()
    deployments = await kube.isvc_deployments(namespace, name) if "deployments" in kinds else ()
    service = await kube.get_service(namespace, split_service_name(name)) if "service" in kinds else None
    route = await kube.get_route(namespace, route_name(name)) if "route" in kinds else None
    endpoints = await kube.isvc_endpointslices(namespace, name) if "endpointslices" in kinds and isvc else ()
    # Only while something is awaited of them: a Pod's reason explains a wait (rollout.py).
    pods = await kube.isvc_pods(namespace, name) if isvc is not None and not idle else ()
    return Seen(namespace, name, isvc, deployments, service, route, pods, uid, endpoints)


def conversion_request(model: dict[str, Any], spec: ModelSpec, generation: int, key: str,
                       attempt: int, requested_at: str = "") -> ConversionRequest:
    meta = model["metadata"]
    return ConversionRequest(meta["namespace"], meta["name"], meta["uid"], generation, key, attempt,
                             spec.source, spec.conversion, requested_at)


@dataclass(frozen=True)
class Reconciled:
    decision: Decision
    wake_after: float | None  # seconds until time alone matters to this Model (None: only a change)
    idle: bool  # nothing in flight


def wake_after(spec: ModelSpec, status: Status, now: dt.datetime, poll_seconds: float | None,
               policy: Policy = DEFAULT_POLICY, secret: SecretCheck | None = None,
               monitor_read: dt.datetime | None = None) -> float | None:
    """When to reconcile again without a change: the decision's own next deadline, the next
    poll of a conversion whose end no watch reports (QUEUE_REFRESH while it waits in line, to
    refresh its position; its start wakes it at once), and the next check of a feedback Secret
    that was not usable (no watch reports Secrets)."""
    due = [next_due(spec, status, now, policy, monitor_read), secret.retry_seconds if secret is not None else None]
    p = status.pending
    if p is not None and p.retryAt is None:
        # decide() records every Queued answer as queuePosition, so the status alone says it waits.
        due.append(QUEUE_REFRESH if p.queuePosition is not None else poll_seconds)
    due.append(notify.next_attempt(status.notifications, now))
    known = [d for d in due if d is not None]
    return min(known) if known else None


async def measure(deps: Deps, model: dict[str, Any], spec: ModelSpec, status: Status,
                  now: dt.datetime) -> tuple[MeasuredValue, ...]:
    meta = model["metadata"]
    assert status.canary is not None
    since = to_time(status.canary.since)  # the canary's start: its feedback counts from then on
    window = window_for(spec.analysis.interval)
    gateway = deps.routing.gateway
    gateway_errors, gateway_refusal = queries.gateway_query(
        gateway.metrics if gateway is not None else None, status.serving.traffic if status.serving else "",
        meta["namespace"], deployment_name(meta["name"], status.canary.revision) if status.canary.revision else "",
        PREDICTOR_PORT, window)
    ctx = QueryContext(model=meta["name"], namespace=meta["namespace"], revision=status.canary.revision,
                       stable_revision=status.stable.revision if status.stable else "", window=window,
                       lifetime=lifetime_for(spec.analysis.interval, (now - since).total_seconds() if since else 0.0),
                       gateway_errors=gateway_errors, gateway_refusal=gateway_refusal)
    async def one(metric: MetricSpec) -> MeasuredValue:
        refused = queries.refusal(metric, ctx)
        if refused:  # a user query that cannot be confined to the Model's namespace: nothing is sent
            return MeasuredValue(metric.name, None, refused)
        if metric.builtin == Builtin.PREDICTION_SHIFT and status.canary is not None \
                and status.canary.task == "regression":
            return await regression_shift(deps.metrics, metric.name, ctx)
        if metric.builtin in queries.FEEDBACK_COUNTERS:
            return await compare_feedback(deps.metrics, metric, ctx)
        samples_of = sample_query(metric, ctx)
        if samples_of is None:
            return await deps.metrics.measure(metric.name, render(metric, ctx))
        value, samples = await asyncio.gather(deps.metrics.measure(metric.name, render(metric, ctx)),
                                              deps.metrics.measure(metric.name, samples_of))
        return replace(value, samples=samples.value)

    return tuple(await asyncio.gather(*(one(m) for m in spec.analysis.metrics)))


async def observe_monitoring(metrics: MetricProvider, namespace: str, name: str, spec: MonitoringSpec,
                             m: Monitoring, now: dt.datetime) -> monitoring.MonitoringObservation:
    """The serving version's counts since its last evaluation, with its reference, and, when there
    are enough to judge, the trailing window's and a moving baseline's (monitoring_queries.py)."""
    at = now.replace(microsecond=0)
    at_s = from_time(at) or ""
    seconds = int(monitoring.window_seconds(m, at))
    if seconds <= 0:
        return monitoring.MonitoringObservation(m.revision, at_s, monitoring.Counts(), error="no time has passed")
    samples, error = await metrics.vector(
        monitoring_queries.window_query(namespace, name, m.revision, 0, seconds, with_reference=True), at.timestamp())
    if error:
        return monitoring.MonitoringObservation(m.revision, at_s, monitoring.Counts(), error=error)
    window, reference = monitoring_queries.parse(samples)
    trailing = None
    if monitoring.enough(spec, m, window, at):
        samples, error = await metrics.vector(monitoring_queries.window_query(
            namespace, name, m.revision, seconds, monitoring.trailing_seconds(spec, m), with_reference=False),
            at.timestamp())
        if error:
            return monitoring.MonitoringObservation(m.revision, at_s, monitoring.Counts(), error=error)
        trailing, _ = monitoring_queries.parse(samples)
        moving = monitoring.baseline_window(spec, seconds)
        if moving is not None:  # spec.monitoring.baseline: trailing or lastWeek
            samples, error = await metrics.vector(monitoring_queries.window_query(
                namespace, name, m.revision, moving[0], moving[1], with_reference=False), at.timestamp())
            if error:  # the profile stands in for the drift signals; the others are judged as ever
                return monitoring.MonitoringObservation(m.revision, at_s, window, trailing, reference,
                                                        baseline_error=error)
            baseline, _ = monitoring_queries.parse(samples)
            return monitoring.MonitoringObservation(m.revision, at_s, window, trailing, reference, baseline)
    return monitoring.MonitoringObservation(m.revision, at_s, window, trailing, reference)


async def observe_rebaseline(metrics: MetricProvider, namespace: str, name: str, revision: str,
                             req: monitoring.RebaselineRequest, now: dt.datetime) -> monitoring.RebaselineObservation:
    """The serving revision's counts over the traffic `serin rebaseline` asked to accept."""
    start, end = to_time(req.start), to_time(req.end)
    at = now.replace(microsecond=0)
    if start is None or end is None:
        return monitoring.RebaselineObservation(req, error="no window")
    ends_before = max(0, int((at - end).total_seconds()))
    seconds = int((end - start).total_seconds())
    samples, error = await metrics.vector(
        monitoring_queries.window_query(namespace, name, revision, ends_before, seconds, with_reference=True),
        at.timestamp())
    if error:
        return monitoring.RebaselineObservation(req, error=error)
    counts, reference = monitoring_queries.parse(samples)
    return monitoring.RebaselineObservation(req, counts, reference)


async def compare_feedback(metrics: MetricProvider, metric: MetricSpec, ctx: QueryContext) -> MeasuredValue:
    """A ground-truth builtin: the feedback counters of both versions, compared here."""
    assert metric.builtin is not None
    counters = queries.FEEDBACK_COUNTERS[metric.builtin]
    # Ground truth is counted under the predicting revision; the estimate under the Pod's own.
    by = mn.REVISION if metric.builtin == Builtin.ESTIMATED_ACCURACY else mn.PREDICTED_REVISION
    answers = await asyncio.gather(*(metrics.by_label(queries.feedback_query(ctx, c, by), by) for c in counters))
    errors = [err for _, err in answers if err]
    if errors:
        return MeasuredValue(metric.name, None, errors[0])
    compared = queries.compare_feedback(metric.builtin, dict(zip(counters, (v for v, _ in answers), strict=True)),
                                        ctx, metric.confidence)
    if compared.value is None:
        return MeasuredValue(metric.name, None, compared.why_none)
    return MeasuredValue(metric.name, compared.value, interval=compared.interval)


async def regression_shift(metrics: MetricProvider, name: str, ctx: QueryContext) -> MeasuredValue:
    """predictionShift of a regressor: both versions' value histograms, PSI computed here."""
    (canary, err_c), (stable, err_s) = await asyncio.gather(
        metrics.by_label(value_buckets_query(ctx, ctx.revision), "le"),
        metrics.by_label(value_buckets_query(ctx, ctx.stable_revision), "le"))
    if err_c or err_s:
        return MeasuredValue(name, None, err_c or err_s)
    return MeasuredValue(name, queries.regression_shift(canary, stable))


async def reconcile(deps: Deps, namespace: str, name: str, now: dt.datetime | None = None) -> Reconciled | None:
    model = await deps.kube.get_model(namespace, name)
    if model is None or model["metadata"].get("deletionTimestamp"):
        return None  # owner references let the garbage collector remove what we created
    now = now or dt.datetime.now(dt.UTC)
    spec = parse_spec(model["spec"])
    status = status_from_dict(model.get("status"))
    generation = int(model["metadata"]["generation"])
    # Before anything can fail or count: the alerts' counters exist at 0 (opmetrics.known).
    sinks = notify.sinks_for(spec.notify, deps.notify_defaults)
    opmetrics.known(namespace, name, canary=status.canary is not None or status.pending is not None, sinks=sinks)

    isvc = await deps.kube.get_isvc(namespace, name)
    router = deps.routing.router_for(spec, isvc)
    seen = await read_serving(deps.kube, router, namespace, name, isvc, idle=is_idle(status),
                              uid=str(model["metadata"].get("uid") or ""))
    serving = deps.routing.observe(router, spec, seen)
    rejected = deps.rejected.get((namespace, name))
    if rejected and not serving.refused:
        serving = replace(serving, refused=rejected)
    conversion = None
    if status.pending is not None and status.pending.retryAt is None:  # nothing runs while backing off
        p = status.pending
        conversion = await deps.executor.poll(
            conversion_request(model, spec, p.generation, p.versionKey, p.attempt, p.startedAt))
    measurements = None
    if analysis_due(spec, status, now):
        started = time.monotonic()
        measurements = await measure(deps, model, spec, status, now)
        measured_at = time.monotonic()
        opmetrics.ANALYSIS_ROUND_SECONDS.labels("measure").observe(measured_at - started)
    watched = monitoring.monitored_version(spec.monitoring, status.stable, status.stableConfirmed)
    monitored = None
    read_at = deps.monitor_reads.get((namespace, name))
    if status.monitoring is not None and monitoring.due(spec.monitoring, status.monitoring, watched, now, read_at):
        started = time.monotonic()
        monitored = await observe_monitoring(deps.metrics, namespace, name, spec.monitoring, status.monitoring, now)
        deps.monitor_reads[(namespace, name)] = read_at = now
        opmetrics.MONITORING_EVALUATIONS.labels("error" if monitored.error else "read").inc()
        opmetrics.ANALYSIS_ROUND_SECONDS.labels("monitor").observe(time.monotonic() - started)
    annotations = dict(model["metadata"].get("annotations") or {})
    rebaselined = None
    asked = annotations.get(REBASELINE_ANNOTATION)
    if asked is not None and watched is not None and status.monitoring is not None \
            and status.monitoring.revision == watched.revision:
        req = monitoring.parse_rebaseline(asked, now)
        if not isinstance(req, str) and req.generation == watched.generation:
            rebaselined = await observe_rebaseline(deps.metrics, namespace, name, watched.revision, req, now)
    secret = _secret_problem(deps, model)
    retrain_job = None
    if status.retrain is not None and status.retrain.state == retrain.RUNNING:
        retrain_job = await deps.kube.get_retrain_job(namespace, status.retrain.job)
        job, refused = deps.retrain_jobs.get((namespace, name), ("", ""))
        if not retrain_job.exists and refused and job == status.retrain.job:
            retrain_job = replace(retrain_job, refused=refused)
    obs = Observations(generation, annotations, serving, conversion,
                       measurements, feedback_secret=secret.describe() if secret is not None else "",
                       monitoring=monitored, rebaseline=rebaselined, model=name, namespace=namespace,
                       retrain_job=retrain_job)

    decision = decide(spec, status, obs, now, deps.policy)
    decision, delivered = _notifications(deps, model, spec, decision, now)
    new_status = status_to_dict(decision.status)
    _failpoint("before-persist", decision)
    if new_status != status_to_dict(status):
        await deps.kube.patch_model_status(model, new_status)
    if deps.notifier is not None:  # the outcomes are in the status now
        deps.notifier.acknowledge(namespace, name, delivered)
    if measurements is not None:
        opmetrics.ANALYSIS_ROUND_SECONDS.labels("persist").observe(time.monotonic() - measured_at)
    _failpoint("after-persist", decision)
    for e in decision.actions:
        if isinstance(e, Emit):  # logged when decided, posted after the writes
            log.info("%s/%s %s: %s", namespace, name, e.reason, e.message)

    async def apply(action: Action) -> None:
        await _apply(deps, model, spec, status, router, seen, action, now)

    await apply_in_order(decision.actions, apply)
    r = decision.status.retrain
    created = deps.retrain_jobs.get((namespace, name))
    if r is not None and r.state == retrain.RUNNING and not r.jobSeen and created == (r.job, ""):
        # Created (or found there) this tick: recorded at once, so that a Job that ends and is
        # deleted (ttlSecondsAfterFinished) before the next tick is never created again.
        fresh = await deps.kube.get_model(namespace, name)
        if fresh is not None:
            recorded = status_from_dict(fresh.get("status")).retrain
            if recorded is not None and recorded.job == r.job and recorded.state == retrain.RUNNING:
                await deps.kube.patch_model_status(fresh, {**(fresh.get("status") or {}),
                                                           "retrain": status_to_dict(Status(
                                                               retrain=replace(recorded, jobSeen=True)))["retrain"]})
    if monitoring.untold(decision.status.monitoring):
        # The transitions' Events are posted (under names that make a second post a duplicate):
        # only now are they recorded as told, so a kill before this line tells them again, once.
        fresh = await deps.kube.get_model(namespace, name)
        if fresh is not None:
            told = decision.status.evolve(monitoring=monitoring.mark_told(decision.status.monitoring))
            await deps.kube.patch_model_status(fresh, status_to_dict(told))
    _observe_monitoring(namespace, name, decision.status.monitoring)
    # A version admitted or a canary started this tick: its rollback counters exist before it can end.
    opmetrics.known(namespace, name, canary=decision.status.canary is not None or decision.status.pending is not None)
    if decision.rolled_back is not None:
        opmetrics.ROLLOUTS_ROLLED_BACK.labels(namespace, name, decision.rolled_back).inc()
    _observe_metrics(namespace, name, decision, measured=measurements is not None)
    return Reconciled(decision, wake_after(spec, decision.status, now, deps.executor.poll_seconds, deps.policy,
                                          _secret_problem(deps, model), read_at),
                      is_idle(decision.status))


def _notifications(deps: Deps, model: dict[str, Any], spec: ModelSpec, decision: Decision,
                   now: dt.datetime) -> tuple[Decision, list[notify.Key]]:
    """The decision with its outbox brought up to date (notify.update): the attempts that ended
    since the last tick, this tick's transitions, what to send now. Also the outcomes it recorded,
    to be acknowledged to the notifier once written."""
    meta = model["metadata"]
    outcomes = deps.notifier.outcomes(meta["namespace"], meta["name"]) if deps.notifier is not None else {}
    ident = notify.Identity(meta["namespace"], meta["name"], str(meta.get("uid") or ""))
    outbox, actions = notify.update(decision.status, decision.actions, spec.notify, deps.notify_defaults, outcomes,
                                    ident, now, deps.notify_retry)
    if outbox == decision.status.notifications and not actions:
        return decision, list(outcomes)
    return replace(decision, status=decision.status.evolve(notifications=outbox),
                   actions=decision.actions + actions), list(outcomes)


async def apply_in_order(actions: tuple[Action, ...], apply: Callable[[Action], Awaitable[None]]) -> None:
    """The serving writes and conversions first, in the decision's order, then its Events: on a
    busy apiserver an Event POST can take a second, and a rollback's traffic write must not queue
    behind the two Events that announce it. A write that raises still has its Events posted
    after it (the status is persisted already: no later tick emits them again)."""
    try:
        for action in actions:
            if not isinstance(action, Emit):
                await apply(action)
    finally:
        for action in actions:
            if isinstance(action, Emit):
                await apply(action)


async def _apply(deps: Deps, model: dict[str, Any], spec: ModelSpec, before: Status, router: Router,
                 seen: Seen, action: Action, now: dt.datetime) -> None:
    meta = model["metadata"]
    if isinstance(action, StartConversion):
        p = before.pending
        requested = p.startedAt if p is not None and p.versionKey == action.versionKey else from_time(now) or ""
        await deps.executor.start(
            conversion_request(model, spec, action.generation, action.versionKey, action.attempt, requested))
    elif isinstance(action, CancelConversion):
        await deps.executor.cancel(conversion_request(model, spec, action.generation, action.versionKey,
                                                      action.attempt))
    elif isinstance(action, ApplyServing):
        # Planned from the objects read at the top of this tick: only this operator writes them.
        key = (meta["namespace"], meta["name"])
        if seen.foreign():
            return  # observed as refused: the decision says why, nothing is written to it
        write: Write | None = None
        try:
            owner = owner_reference(model)
            writes = router.plan(seen, action, spec, owner)
            # Before the predictors that read it: the Secret their feedback key comes from.
            if not await _feedback_secret(deps, model, owner, seen, now, any(w.kind == "isvc" for w in writes)):
                return
            for write in writes:
                # One line per serving write (a rollout makes a few): what the serving layer was told.
                log.info("%s/%s %s %s %s: %s", *key, write.op.value, write.kind, write.name,
                         json.dumps(write.body, separators=(",", ":"))[:240] if write.body else "")
                try:
                    await deps.kube.write(meta["namespace"], write)
                except Conflict:
                    # Every InferenceService is in the cache (a 409 there is the cache behind: read
                    # again); Serin's Services and HTTPRoutes only when labelled as Serin's.
                    if write.op != Op.CREATE or write.kind == "isvc":
                        raise
                    # Serin's Services and HTTPRoutes are watched by its label: a create that finds
                    # one of that name meets an object Serin did not make (or no longer marks as
                    # its own). Never taken over; said in status, not retried in a hot loop.
                    reason = (f"{write.kind} {meta['namespace']}/{write.name} exists and is not Serin's "
                              "(no app.kubernetes.io/managed-by: serin label): Serin does not take over objects "
                              "it did not create; delete it, or name the Model otherwise")
                    log.warning("%s/%s %s", *key, reason)
                    deps.rejected[key] = reason
                    return
        except ApiException as err:
            if err.status not in (400, 403, 422):
                raise
            # Refused for good (a validating webhook, the schema, RBAC): say why, next tick.
            what = f"{write.kind} {write.name} {write.op}" if write is not None else "a serving write"
            reason = f"{what} refused: {api_message(err)}"
            log.warning("%s/%s %s", *key, reason)
            deps.rejected[key] = reason
        else:
            deps.rejected.pop(key, None)
    elif isinstance(action, ClearAnnotation):
        await deps.kube.remove_annotation(model, action.key, action.value)
    elif isinstance(action, CreateRetrainJob):
        rs = spec.monitoring.retrain
        if rs is not None:
            body = retrain.job_body(rs.template, action.name, meta["namespace"], meta["name"], action.env,
                                    owner_reference(model))
            key = (meta["namespace"], meta["name"])
            try:
                if await deps.kube.create_job(meta["namespace"], body):
                    log.info("%s/%s created retraining Job %s", *key, action.name)
                deps.retrain_jobs[key] = (action.name, "")
            except ApiException as err:
                if err.status not in (400, 403, 422):
                    raise
                # Refused for good (the template, RBAC, an admission policy): the next tick's
                # observation, which ends the retraining as Failed saying why.
                log.warning("%s/%s retraining Job %s refused: %s", *key, action.name, api_message(err))
                deps.retrain_jobs[key] = (action.name, api_message(err))
    elif isinstance(action, Deliver):
        sink = notify.sinks_for(spec.notify, deps.notify_defaults).get(action.notification.sink)
        if deps.notifier is not None and sink is not None:
            deps.notifier.submit(meta["namespace"], meta["name"], action.notification, sink)
    elif isinstance(action, Emit):
        _count_event(meta["namespace"], meta["name"], before, action, now)
        await deps.kube.event(model, action.type, action.reason, action.message, action.name)


async def _feedback_secret(deps: Deps, model: dict[str, Any], owner: dict[str, Any], seen: Seen, now: dt.datetime,
                           needed: bool) -> bool:
    """Make sure of the Model's feedback Secret before a write that starts predictors (`needed`),
    or when a Secret found unusable is due to be checked again; False: hold this tick's serving
    writes. A Secret that cannot be had (RBAC, the apiserver's refusal) holds nothing: predictors
    serve with keys of their own. One that exists and is not known to be this Model's holds the
    Model's first deployment only, never the writes of a Model that serves (a rollback must not
    wait for it): its first deployment made or checked the Secret. Each new finding is a Warning
    Event and a log line; status says it while it lasts (feedback_secret.py)."""
    meta = model["metadata"]
    key = (meta["namespace"], meta["name"])
    known = deps.secrets.get(key)
    if known is not None and known[0].model_uid != meta.get("uid"):
        known = None  # found for an earlier Model of this name
    due = known is not None and (now - known[1]).total_seconds() >= known[0].retry_seconds
    if not needed and not due:
        return True
    # Serving already: the InferenceService is there and this Model's (routing.base.Seen.foreign).
    serves = seen.isvc is not None and not seen.foreign()
    check = await deps.kube.ensure_feedback_secret(model, owner, verify=not serves)
    if check.usable:
        deps.secrets.pop(key, None)
        return True
    if known is None or known[0] != check:
        log.warning("%s/%s %s", *key, check.describe())
        await deps.kube.event(model, "Warning", "FeedbackSecret", check.describe())
    deps.secrets[key] = (check, now)
    return serves or not check.holds_first_deployment


def _secret_problem(deps: Deps, model: dict[str, Any]) -> SecretCheck | None:
    meta = model["metadata"]
    known = deps.secrets.get((meta["namespace"], meta["name"]))
    return known[0] if known is not None and known[0].model_uid == meta.get("uid") else None


def _count_event(ns: str, name: str, before: Status, e: Emit, now: dt.datetime) -> None:
    if e.reason == "NotificationFailed":
        opmetrics.NOTIFICATIONS_FAILED.labels(ns, e.about).inc()
    elif e.reason == "CanaryStarted":
        opmetrics.ROLLOUTS_STARTED.labels(ns, name).inc()
    elif e.reason in ("Promoted", "Serving"):
        opmetrics.ROLLOUTS_PROMOTED.labels(ns, name).inc()
    elif e.reason in ("ConversionSucceeded", "ConversionFailed"):
        opmetrics.CONVERSIONS.labels(ns, name, "passed" if e.reason == "ConversionSucceeded" else "failed").inc()
        started = to_time(before.pending.startedAt) if before.pending else None
        if started is not None:
            opmetrics.CONVERSION_SECONDS.labels(ns, name).observe((now - started).total_seconds())


def _observe_monitoring(ns: str, name: str, m: Monitoring | None) -> None:
    """One series per (Model, signal): 0 watching, 1 alarm, -1 no baseline; dry-run signals and
    silenced Models are marked so that alerts can leave them out."""
    if m is None:
        opmetrics.forget_monitoring(ns, name)
        return
    silenced = "true" if m.silencedUntil and (to_time(m.silencedUntil) or dt.datetime.min.replace(tzinfo=dt.UTC)) \
        > dt.datetime.now(dt.UTC) else "false"
    for x in m.signals:
        value = {monitoring.ALARM: 1, monitoring.NO_BASELINE: -1}.get(x.state, 0)
        opmetrics.set_monitoring(ns, name, x.signal, value, x.evidence, "true" if x.dryRun else "false", silenced)


def _observe_metrics(ns: str, name: str, decision: Decision, measured: bool) -> None:
    c = decision.status.canary
    serving_canary = c is not None and c.state == CanaryState.PROGRESSING
    opmetrics.CANARY_WEIGHT.labels(ns, name).set(c.weight if c is not None and serving_canary else 0)
    if measured and decision.status.analysis:
        latest = decision.status.analysis[-1].at
        for m in decision.status.analysis:
            if m.at == latest:
                opmetrics.ANALYSIS_VERDICTS.labels(ns, name, m.metric, m.verdict).inc()
