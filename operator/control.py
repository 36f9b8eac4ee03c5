"""`serin status|promote|abort|pause|resume MODEL [-n NS]`, also `kubectl serin ...`.

Pause and resume set spec.rollout.paused (declarative: it survives anything). Promote and abort
are one-shot commands, written as annotations naming the canary generation they mean, so a late
command can never act on a later version; the operator clears them once read. `silence` is one
too: it names the serving generation it means and until when (status.monitoring.silencedUntil
records it), so a silence never carries over to a version promoted after it. So is `rebaseline`:
the serving generation and the traffic to accept as its reference, [now - window, now], fixed when
the command runs (status.monitoring.baseline records it). `approve` lets a retraining awaiting
approval (spec.monitoring.retrain.approval: Manual) start, naming the serving generation it means.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException
from serin.operator.kube import GROUP, MERGE, PLURAL, VERSION
from serin.operator.retrain import APPROVE_ANNOTATION
from serin.operator.rollout import ABORT_ANNOTATION, PROMOTE_ANNOTATION, REBASELINE_ANNOTATION, SILENCE_ANNOTATION
from serin.operator.spec import parse_duration
from serin.operator.status import from_time


class CommandError(Exception):
    pass


async def _run(action: str, name: str, namespace: str, kubeconfig: str | None,
               silence_for: str = "", window: str = "", reason: str = "",
               generation: int = 0) -> tuple[str, dict[str, Any]]:
    """(the text to print, the same as a JSON document)."""
    await config.load_kube_config(config_file=kubeconfig)
    async with client.ApiClient() as api:
        custom = client.CustomObjectsApi(api)
        try:
            model = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as err:
            raise CommandError(f"model {namespace}/{name}: {err.reason}") from err
        status = model.get("status") or {}
        if action == "status":
            return render_status(model), status_document(model)
        patch: dict[str, Any]
        if action == "silence":
            stable = status.get("stable")
            if not stable or not (status.get("monitoring") or {}).get("revision"):
                raise CommandError(f"{name} has no monitored serving version (phase {status.get('phase', 'Pending')})")
            until = from_time(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=parse_duration(silence_for)))
            patch = {"metadata": {"annotations": {SILENCE_ANNOTATION: f"{stable['generation']}/{until}"}}}
            message = f"{name}: monitoring of generation {stable['generation']} silenced until {until}"
        elif action == "rebaseline":
            stable = status.get("stable")
            if not stable or not (status.get("monitoring") or {}).get("revision"):
                raise CommandError(f"{name} has no monitored serving version (phase {status.get('phase', 'Pending')})")
            end = dt.datetime.now(dt.UTC).replace(microsecond=0)
            start = end - dt.timedelta(seconds=parse_duration(window))
            request = {"generation": int(stable["generation"]), "start": from_time(start), "end": from_time(end),
                       "reason": reason}
            patch = {"metadata": {"annotations": {REBASELINE_ANNOTATION: json.dumps(request)}}}
            message = (f"{name}: rebaseline of generation {stable['generation']} to the traffic of "
                       f"{request['start']} .. {request['end']} requested (serin status {name} shows the "
                       "baseline once taken; a RebaselineRefused Event says why not)")
        elif action == "approve":
            r = status.get("retrain") or {}
            if r.get("state") != "AwaitingApproval":
                raise CommandError(f"{name} has no retraining awaiting approval"
                                   + (f" (the latest: {r.get('state')}, Job {r.get('job')})" if r else ""))
            if generation and generation != int(r["generation"]):
                raise CommandError(f"{name}: the retraining awaiting approval is for generation {r['generation']}, "
                                   f"not {generation}")
            # The Job's name: fixed by the alarm, so an approval never starts a later alarm's retraining.
            patch = {"metadata": {"annotations": {APPROVE_ANNOTATION: str(r["job"])}}}
            message = (f"{name}: retraining approved for the {r.get('signal')} alarm of generation {r['generation']} "
                       f"(Job {r.get('job')})")
        elif action in ("pause", "resume"):
            patch = {"spec": {"rollout": {"paused": action == "pause"}}}
            message = f"{name}: rollout {'paused' if action == 'pause' else 'resumed'}"
        else:
            canary = status.get("canary")
            if not canary or canary.get("state") != "Progressing":
                raise CommandError(f"{name} has no canary in progress (phase {status.get('phase', 'Pending')})")
            key = PROMOTE_ANNOTATION if action == "promote" else ABORT_ANNOTATION
            patch = {"metadata": {"annotations": {key: str(canary["generation"])}}}
            message = f"{name}: {action} requested for generation {canary['generation']}"
        await custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch,
                                                    _content_type=MERGE)  # type: ignore[call-arg]  # passed through **kwargs; the stubs omit it
        return message, {"model": name, "namespace": namespace, "action": action, "patch": patch, "message": message}


def status_document(model: dict[str, Any]) -> dict[str, Any]:
    """`serin status -o json`: the Model's identity and its whole status, as the API holds it."""
    meta = model.get("metadata") or {}
    return {"name": meta.get("name"), "namespace": meta.get("namespace"), "generation": meta.get("generation"),
            "status": model.get("status") or {}}


def render_status(model: dict[str, Any]) -> str:
    s = model.get("status") or {}
    lines = [f"{model['metadata']['name']}: {s.get('phase', 'Pending')}  {s.get('message', '')}".rstrip()]
    if s.get("stable"):
        st = s["stable"]
        lines.append(f"  stable  generation {st.get('generation')}  {st.get('revision', '')}"
                     f"  {st.get('storageUri', '')}")
    if s.get("canary"):
        c = s["canary"]
        lines.append(f"  canary  generation {c.get('generation')}  {c.get('state')}  step {c.get('step', 0) + 1}"
                     f"  weight {c.get('weight')}%  {c.get('revision', '')}")
    if s.get("conversion"):
        conv = s["conversion"]
        lines.append(f"  conversion  generation {conv.get('generation')}  passed={conv.get('passed')}"
                     f"  {conv.get('reason') or ''}".rstrip())
    for m in (s.get("analysis") or [])[-6:]:
        value = "-" if m.get("value") is None else f"{m['value']:.4g}"
        lines.append(f"  {m.get('at', '')}  {m.get('metric'):<16} {value:>10}  {m.get('verdict')}"
                     f"  {m.get('reason', '')}")
    m = s.get("monitoring")
    if m:
        silenced = f"  silenced until {m['silencedUntil']}" if m.get("silencedUntil") else ""
        lines.append(f"  monitoring  {m.get('health', '')}  revision {m.get('revision')}  "
                     f"{m.get('evaluations', 0)} evaluations, last {m.get('evaluatedAt', '')}{silenced}")
        if m.get("problem"):
            lines.append(f"    cannot read counts: {m['problem']}")
        b = m.get("baseline")
        if b:
            why = f": {b['reason']}" if b.get("reason") else ""
            accuracy = "".join(f", {k} {b[k]}" for k in ("accuracy", "estimatedAccuracy") if b.get(k) is not None)
            lines.append(f"    baseline  the traffic of {b.get('start')} .. {b.get('end')} "
                         f"({b.get('rows', 0):.0f} rows){accuracy}, taken {b.get('takenAt')}{why}")
        for x in m.get("signals") or []:
            dry = " (dry run)" if x.get("dryRun") else ""
            lines.append(f"    {x.get('signal', ''):<18} {x.get('state', ''):<10} evidence {x.get('evidence', 0):>6.0%}"
                         f"{dry}  {x.get('message', '')}".rstrip())
    r = s.get("retrain")
    if r:
        lines.append(f"  retrain  {r.get('state')}  Job {r.get('job')}  {r.get('signal')} alarm of generation "
                     f"{r.get('generation')}, triggered {r.get('triggeredAt')}  {r.get('message', '')}".rstrip())
    for c in s.get("conditions") or []:
        lines.append(f"  condition {c['type']}={c['status']} ({c.get('reason', '')}) {c.get('message', '')}".rstrip())
    return "\n".join(lines)


def main(argv: list[str], action: str) -> int:
    parser = argparse.ArgumentParser(prog=f"serin {action}")
    parser.add_argument("model")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text")
    if action == "silence":
        parser.add_argument("--for", dest="silence_for", required=True,
                            help="how long, e.g. 2h or 30m (0s ends a silence)")
    if action == "rebaseline":
        parser.add_argument("--window", default="24h",
                            help="the traffic to accept, ending now: e.g. 24h or 168h (default 24h, at most 744h)")
        parser.add_argument("--reason", default="", help="why, recorded in status and the Event")
    if action == "approve":
        parser.add_argument("--generation", type=int, default=0,
                            help="the serving generation the approval means (refused if another awaits)")
    args = parser.parse_args(argv)
    if action == "silence":
        try:
            parse_duration(args.silence_for)
        except ValueError:
            parser.error(f"--for {args.silence_for!r}: not a duration such as 2h, 30m or 90s")
    if action == "rebaseline":
        try:
            seconds = parse_duration(args.window)
        except ValueError:
            parser.error(f"--window {args.window!r}: not a duration such as 24h, 168h or 90m")
        if not 0 < seconds <= 31 * 86400:
            parser.error(f"--window {args.window}: must be above 0s and at most 744h (31 days)")
    try:
        text, document = asyncio.run(_run(action, args.model, args.namespace, args.kubeconfig,
                                          getattr(args, "silence_for", ""), getattr(args, "window", ""),
                                          getattr(args, "reason", ""), getattr(args, "generation", 0)))
    except CommandError as err:
        print(f"serin {action}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(document, indent=2) if args.output == "json" else text)
    return 0


def status_main(argv: list[str]) -> int:
    return main(argv, "status")


def promote_main(argv: list[str]) -> int:
    return main(argv, "promote")


def abort_main(argv: list[str]) -> int:
    return main(argv, "abort")


def pause_main(argv: list[str]) -> int:
    return main(argv, "pause")


def resume_main(argv: list[str]) -> int:
    return main(argv, "resume")


def silence_main(argv: list[str]) -> int:
    return main(argv, "silence")


def rebaseline_main(argv: list[str]) -> int:
    return main(argv, "rebaseline")


def approve_main(argv: list[str]) -> int:
    return main(argv, "approve")
