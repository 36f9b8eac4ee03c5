"""`serin demo`: Serin's whole job on one machine, for real.

With `--cluster` (what hack/demo.sh runs; needs root): a real node, KServe's own controller in
Standard mode, Traefik as the Gateway splitting traffic exactly, Serin installed by Helm from its
own images, Prometheus discovering the runtime Pods, an S3 server (versitygw) the conversion Jobs
read each version from and write it to (the S3 model store, from where KServe's storage-initializer
fetches it into each predictor); everything is torn down at the end.
Without it: the local platform (real kube-apiserver, operator, KServe stand-in in Knative mode,
runtimes as processes, Prometheus), which keeps running afterwards.

Either way, three versions of a model, and steady load throughout:
  v1  a scikit-learn model: converted, parity-proven, served at 100 %
  v2  a retrained model: walks the canary steps under analysis and is promoted
  v3  an ONNX model that fails on part of its input space: rolled back automatically
  v4  (--cluster) the loop: the traffic drifts, monitoring raises Drifted, the team's webhook is
      told, the example trainer runs as a Job on the captured traffic and its truth, and the
      retrained version is canaried and promoted
A timeline is printed as it happens; a PNG chart of weight, error rate and PSI is written at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from serin.local import demo_models, dev, trainer
from serin.local.controlplane import ControlPlaneError
from serin.local.loadgen import Answer, LoadGenerator, sender_token

NAMESPACE, NAME = "demo", "fraud"
ROLLOUT = {
    "steps": [{"weight": 10, "pause": "10s"}, {"weight": 50, "pause": "10s"}],
    "analysis": {"interval": "3s", "failureLimit": 2, "inconclusiveLimit": 5, "metrics": [
        {"name": "error-rate", "builtin": "errorRate", "max": 0.01},
        {"name": "p99-latency", "builtin": "latencyP99Seconds", "max": 0.5},
        {"name": "input-drift", "builtin": "inputPSI", "max": 0.2},
    ]},
}
console = Console(highlight=False)


@dataclass
class Kubectl:
    state: dict[str, Any]

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [f"{self.state['bin']}/kubectl", "--kubeconfig", self.state["kubeconfig"], *args]
        return subprocess.run(argv, input=input, capture_output=True, text=True, check=check)

    def model(self) -> dict[str, Any]:
        out = self("get", "model", NAME, "-n", NAMESPACE, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def isvc(self) -> dict[str, Any]:
        out = self("get", "inferenceservice", NAME, "-n", NAMESPACE, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}


@dataclass
class Timeline:
    t0: float = field(default_factory=time.monotonic)
    points: list[dict[str, Any]] = field(default_factory=list)
    seen_events: set[str] = field(default_factory=set)
    last_line: str = ""

    def now(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str, style: str = "") -> None:
        console.print(f"[dim]{self.now():6.1f}s[/dim]  {text}", style=style)


def apply_version(k: Kubectl, files: demo_models.VersionFiles, source: dict[str, Any] | None = None,
                  serving: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    """The Model at this version: its files by file:// URI (the local executor reads them), or
    `source` (on a cluster: s3:// on the platform's S3 server, with the namespace's keys)."""
    source = source or {"uri": files.model.as_uri(), "sampleUri": files.sample.as_uri()}
    spec: dict[str, Any] = {"source": {**source, "format": files.format}, "rollout": ROLLOUT}
    if serving:
        spec["serving"] = serving
    spec.update(extra or {})
    body = {"apiVersion": "serin.dev/v1alpha1", "kind": "Model", "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": spec}
    k("apply", "-f", "-", input=yaml.safe_dump(body))


def retrained_and_promoted(status: dict[str, Any]) -> bool:
    """The loop's end: generation 4 (the retrained version) promoted; a failed retraining ends the
    demo at once with the Job's reason instead of a timeout."""
    retrain = status.get("retrain") or {}
    if retrain.get("state") == "Failed":
        raise RuntimeError(f"the retraining Job {retrain.get('job')} failed: {retrain.get('message')} "
                           f"(kubectl logs -n {NAMESPACE} job/{retrain.get('job')})")
    failed = status.get("failed") or {}
    if int(failed.get("generation") or 0) >= 4:
        raise RuntimeError(f"the retrained version (generation {failed.get('generation')}) did not make it: "
                           f"{status.get('message')}")
    return bool(status.get("phase") == "Promoted" and (status.get("stable") or {}).get("generation") == 4)


def follow(k: Kubectl, tl: Timeline, prom_url: str, until: Any, load: LoadGenerator | None,
           timeout: float = 300, webhook: Webhook | None = None) -> dict:
    """Prints transitions and measurements until `until(status)` holds; records chart points."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        model = k.model()
        status = model.get("status") or {}
        _print_new_events(k, tl)
        if webhook is not None:
            webhook.print_new(tl)
        canary = status.get("canary") or {}
        weight = canary.get("weight", 0) if canary.get("state") == "Progressing" else 0
        line = f"{status.get('phase', 'Pending'):<11} {status.get('message', '')}"
        if line != tl.last_line:
            tl.say(line, "bold")
            tl.last_line = line
        for m in status.get("analysis") or []:
            key = f"{m.get('at')}/{m.get('metric')}"
            if key not in tl.seen_events:
                tl.seen_events.add(key)
                value = "no data" if m.get("value") is None else f"{m['value']:.4f}"
                color = {"Successful": "green", "Failed": "red"}.get(m.get("verdict", ""), "yellow")
                tl.say(f"    analysis  {m['metric']:<12} {value:>9}  [{color}]{m['verdict']}[/{color}]"
                       f"  {m.get('reason', '')}")
        tl.points.append({"t": tl.now(), "weight": weight, "psi": _psi(prom_url)} | _errors(load))
        if until(status):
            return status
        time.sleep(1.0)
    raise TimeoutError(f"the demo waited {timeout:.0f}s; last status: {status.get('phase')}: {status.get('message')}")


class Webhook:
    """The team's webhook in the demo: on the host end of the node's veth, where the operator's Pod
    reaches it; it verifies each notification's signature and prints what it received."""

    def __init__(self, host: str, key: bytes) -> None:
        import http.server
        import threading

        self.key, self.printed = key, 0
        self.received: list[tuple[dict[str, Any], bool, float]] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                from serin.operator import notify

                signed = notify.verify(body, self.headers.get(notify.SIGNATURE_HEADER, ""), hook.key)
                hook.received.append((json.loads(body), signed, time.monotonic()))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/serin"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def print_new(self, tl: Timeline) -> None:
        for event, signed, _ in self.received[self.printed:]:
            data = event.get("data") or {}
            detail = ""
            if data.get("signal"):
                worst = ", ".join(f"{f['feature']} PSI {f['psi']:.2f}" for f in data["signal"].get("features", [])[:2])
                detail = f" [{data['signal']['signal']}{': ' + worst if worst else ''}]"
            tl.say(f"  webhook  received [magenta]{event['type']}[/magenta] id {event['id'][:12]}… "
                   f"signature {'verified' if signed else '[red]INVALID[/red]'}{detail}")
        self.printed = len(self.received)

    def first(self, reason: str, after: float = 0.0) -> float | None:
        """When the first notification of `reason` came after `after` (time.monotonic)."""
        return next((t for e, _, t in self.received if (e.get("data") or {}).get("reason") == reason and t > after),
                    None)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _print_new_events(k: Kubectl, tl: Timeline) -> None:
    out = k("get", "events", "-n", NAMESPACE, "-o", "json", check=False)
    if out.returncode != 0:
        return
    for e in sorted(json.loads(out.stdout)["items"], key=lambda e: e.get("firstTimestamp") or ""):
        uid = e["metadata"]["uid"]
        if uid in tl.seen_events or e["involvedObject"].get("kind") != "Model":
            continue
        tl.seen_events.add(uid)
        style = "red" if e["type"] == "Warning" else "cyan"
        tl.say(f"  event  [{style}]{e['reason']}[/{style}]: {e['message']}")


def _psi(prom_url: str) -> dict[str, float]:
    import urllib.parse
    import urllib.request

    q = urllib.parse.urlencode({"query": f'max by (revision) (serin_input_psi{{model="{NAME}"}})'})
    try:
        with urllib.request.urlopen(f"{prom_url}/api/v1/query?{q}", timeout=2) as resp:
            result = json.load(resp)["data"]["result"]
        return {r["metric"]["revision"]: float(r["value"][1]) for r in result}
    except (OSError, ValueError, KeyError):
        return {}


def _errors(load: LoadGenerator | None) -> dict[str, float]:
    if load is None:
        return {"error_rate": 0.0}
    recent = load.window(load.now() - 3)
    bad = [a for a in recent if a.status >= 500 or a.status == 0]
    return {"error_rate": len(bad) / len(recent) if recent else 0.0}


def write_chart(tl: Timeline, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [p["t"] for p in tl.points]
    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    axes[0].step(t, [p["weight"] for p in tl.points], where="post", color="tab:blue")
    axes[0].set_ylabel("canary weight %")
    axes[1].plot(t, [100 * p["error_rate"] for p in tl.points], color="tab:red")
    axes[1].set_ylabel("errors % (all traffic)")
    revisions = sorted({r for p in tl.points for r in p["psi"]})
    for rev in revisions:
        axes[2].plot(t, [p["psi"].get(rev, float("nan")) for p in tl.points], label=rev)
    axes[2].axhline(0.2, color="grey", linestyle="--", linewidth=0.8)
    axes[2].set_ylabel("input PSI")
    axes[2].set_xlabel("seconds since the demo started")
    if revisions:
        axes[2].legend(fontsize="small")
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summarise(tl: Timeline, work: Path, final: dict[str, Any], answers: list[Answer]) -> None:
    chart = work / "timeline.png"
    looped = (final.get("stable") or {}).get("generation") == 4
    write_chart(tl, chart, "Serin demo: v2 promoted, v3 rolled back" + (", v4 retrained on drift and promoted"
                                                                         if looped else ""))
    failed = [a for a in answers if a.status >= 500 or a.status == 0]
    by_rev: dict[str, int] = {}
    for a in failed:
        by_rev[a.revision or "?"] = by_rev.get(a.revision or "?", 0) + 1
    console.rule("summary")
    console.print(f"the demo ended {final.get('phase')}: {final.get('message')}")
    console.print(f"requests: {len(answers)}, failed: {len(failed)} {by_rev or ''} (v3's own 500s: its model "
                  "raises; any other failure would be a request lost to a weight change)")
    console.print(f"chart: {chart}")


def run(home: Path) -> int:
    tl = Timeline()
    tl.say("bringing up the local platform (kube-apiserver, operator, KServe stand-in, Prometheus)")
    state = dev.up(home)
    k = Kubectl(state)
    k("create", "namespace", NAMESPACE, check=False)
    k("delete", "model", NAME, "-n", NAMESPACE, "--ignore-not-found", "--wait=true")
    # A re-run: the garbage collector removes the old InferenceService (owner reference) first.
    k("wait", "--for=delete", f"inferenceservice/{NAME}", "-n", NAMESPACE, "--timeout=60s", check=False)
    work = home / "demo"
    tl.say("training three versions (no downloads)")
    v1 = demo_models.sklearn_version(work / "v1", seed=1)
    v2 = demo_models.sklearn_version(work / "v2", seed=2)
    v3 = demo_models.erroring_version(work / "v3")

    console.rule("v1: first version, straight to 100 %")
    apply_version(k, v1)
    follow(k, tl, state["prometheus"], lambda s: s.get("phase") == "Promoted", None)
    url = k.isvc()["status"]["url"]
    load = LoadGenerator(url, NAME, rate=40, rows=20).start()
    tl.say(f"sending 40 requests/s of 20 rows to {url}")
    try:
        time.sleep(5)
        console.rule("v2: a retrained model, canary steps 10 % → 50 % → 100 %")
        apply_version(k, v2)
        follow(k, tl, state["prometheus"], lambda s: s.get("phase") == "Promoted"
               and (s.get("stable") or {}).get("generation") == 2, load)
        console.rule("v3: a model that fails on part of its input space")
        apply_version(k, v3)
        final = follow(k, tl, state["prometheus"], lambda s: s.get("phase") in ("RolledBack", "Promoted", "Failed")
                       and (s.get("observedGeneration") == 3) and not s.get("canary"), load)
        time.sleep(3)
    finally:
        load.stop()
    summarise(tl, work, final, load.answers)
    dev.print_usage_hint(state)
    console.print("Stop it with: serin dev down")
    return 0 if final.get("phase") == "RolledBack" else 1


def run_cluster(home: Path) -> int:
    """The same three versions on a real node with KServe's own controller (Standard mode) and
    Traefik splitting traffic through Serin's HTTPRoute."""
    from serin.local.cluster_platform import MODEL_RESOURCES, S3_SECRET, STORE_BUCKET, STORE_PREFIX, bring_up
    from serin.local.node import HOST_ADDRESS

    tl = Timeline()
    tl.say("bringing up a real node, KServe's own controller (Standard mode), Traefik as the Gateway, "
           "Prometheus, an S3 server (versitygw), and Serin from `helm install charts/serin`")
    work = home / "cluster-demo"
    shutil.rmtree(work, ignore_errors=True)
    platform = bring_up(work, NAMESPACE, gateway=True)
    tl.say("platform up: " + ", ".join(f"{k} {v:.1f}s" for k, v in platform.started_in.items()))
    cp = platform.cluster.control_plane
    k = Kubectl({"bin": str(cp.bin_dir), "kubeconfig": str(cp.kubeconfig)})
    cp_images = {name: image.ref for name, image in platform.cluster.images.items()}
    load: LoadGenerator | None = None
    webhook: Webhook | None = None
    try:
        tl.say(f"training three versions (no downloads), uploaded to s3://{platform.bucket}/ on {platform.s3.url} "
               f"and read by each conversion Job with the keys of the namespace's Secret; converted, each goes "
               f"to the S3 model store s3://{STORE_BUCKET}/{STORE_PREFIX}/{NAMESPACE}/, fetched from there into "
               f"its predictor Pods")
        versions = {"v1": demo_models.sklearn_version(work / "v1", seed=1),
                    "v2": demo_models.sklearn_version(work / "v2", seed=2),
                    "v3": demo_models.erroring_version(work / "v3")}

        # The loop (v4): what the predictors answer is captured into the bucket, monitoring watches
        # the serving version, a lasting drift starts the example trainer as a Job, and the team's
        # webhook is told of every transition, signed with the key of the namespace's serin-notify.
        webhook = Webhook(HOST_ADDRESS, key=b"demo-signing-key")
        k("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            *trainer.rbac(NAMESPACE, NAME),
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "serin-notify", "namespace": NAMESPACE},
             "stringData": {"team-key": webhook.key.decode()}}]}))
        serving = {"resources": MODEL_RESOURCES, "capture": {
            "share": 1, "uri": f"s3://{platform.bucket}/capture", "flushInterval": "2s",
            "s3": {"endpoint": platform.s3.url, "secretName": S3_SECRET}}}
        watch = {"monitoring": {
            "interval": "10s", "minRows": 500, "trailingWindow": "20s", "resolveAfter": 2,
            "retrain": {"for": "0s", "cooldown": "1h", "conditions": ["Drifted"], "window": "1h",
                        "template": trainer.job_template(NAME, cp_images["converter"],
                                                         f"s3://{platform.bucket}/retrained", S3_SECRET)}},
            "notify": {"sinks": [{"name": "team", "url": webhook.url, "signingSecretKey": "team-key"}]}}

        def apply(version: str) -> None:
            files = versions[version]
            apply_version(k, files, platform.upload(NAME, version, files), serving, watch)

        prom = platform.prometheus.url
        console.rule("v1: first version, straight to 100 % (a conversion Job, then KServe's Deployment)")
        apply("v1")
        follow(k, tl, prom, lambda s: s.get("phase") == "Promoted", None, webhook=webhook)
        assert platform.gateway is not None
        host = f"{NAME}.{NAMESPACE}.example.com"
        token = sender_token(k, NAME, NAMESPACE)
        load = LoadGenerator(platform.gateway.address, NAME, rate=40, rows=20, host=host, feedback=0.5,
                             feedback_delay=0.5, feedback_token=token).start()
        tl.say(f"sending 40 requests/s of 20 rows through the Gateway ({platform.gateway.address}, Host: {host}), "
               "and the ground truth of half of them to the feedback endpoint")
        time.sleep(5)
        console.rule("v2: a retrained model, canary steps 10 % → 50 % → 100 %, weights exact on the HTTPRoute")
        apply("v2")
        follow(k, tl, prom, lambda s: s.get("phase") == "Promoted" and (s.get("stable") or {}).get("generation") == 2,
               load, webhook=webhook)
        console.rule("v3: a model that fails on part of its input space")
        apply("v3")
        rolled_back = follow(k, tl, prom, lambda s: s.get("phase") in ("RolledBack", "Promoted", "Failed")
                             and s.get("observedGeneration") == 3 and not s.get("canary"), load, webhook=webhook)
        console.rule("the loop: the traffic drifts; Serin tells the team, retrains, canaries and promotes")
        load.set_shift(1.0)
        t_shift = time.monotonic()
        tl.say("the clients' traffic moves: features f0 and f1 shift by one standard deviation")
        follow(k, tl, prom, lambda s: (s.get("monitoring") or {}).get("health") == "Drifted", load, 180, webhook)
        t_drifted = time.monotonic()
        follow(k, tl, prom, retrained_and_promoted, load, 600, webhook)
        t_promoted = time.monotonic()
        final = follow(k, tl, prom, lambda s: (s.get("monitoring") or {}).get("revision") == "gen4"
                       and (s.get("monitoring") or {}).get("health") == "Healthy"
                       and not (s.get("notifications") or {}).get("pending"), load, 180, webhook)
        t_healthy = time.monotonic()
        retrain = final.get("retrain") or {}
        told = {r: webhook.first(r, t_shift) for r in ("DriftDetected", "RetrainTriggered", "RetrainSucceeded",
                                                        "Promoted")}
        since = [f"{r} +{t - t_shift:.0f}s" for r, t in told.items() if t is not None]
        tl.say(f"the loop, from the shift: Drifted +{t_drifted - t_shift:.0f}s, retrained version promoted "
               f"+{t_promoted - t_shift:.0f}s, healthy again +{t_healthy - t_shift:.0f}s; the webhook got "
               f"{', '.join(since)}; Job {retrain.get('job')}: {retrain.get('message', '')}", "bold")
        time.sleep(3)
    finally:
        if load is not None:
            load.stop()
        if webhook is not None:
            webhook.stop()
        tl.say("tearing the platform down")
        left = platform.down()
    summarise(tl, work, final, load.answers if load is not None else [])
    if left:
        console.print(f"[red]left on the host: {left}[/red]")
    loop_closed = (final.get("stable") or {}).get("generation") == 4 and retrain.get("state") == "Succeeded"
    return 0 if rolled_back.get("phase") == "RolledBack" and loop_closed and not left else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serin demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=dev.DEFAULT_HOME)
    parser.add_argument("--cluster", action="store_true",
                        help="run on a real node with KServe's own controller and a Gateway (needs root)")
    args = parser.parse_args(argv)
    args.home.mkdir(parents=True, exist_ok=True)
    try:
        return run_cluster(args.home) if args.cluster else run(args.home)
    except (ControlPlaneError, OSError, TimeoutError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or ""
        print(f"serin demo: {err} {detail}".strip(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
