"""The example trainer: what a `spec.monitoring.retrain` Job runs in the demo and the cluster tier,
and a template for yours (docs/retraining.md).

    python -m serin.local.trainer --out s3://BUCKET/PREFIX [--min-rows 2000] [--wait 300]

It reads what Serin tells every retraining Job (SERIN_MODEL, SERIN_NAMESPACE, SERIN_ALARM_SINCE,
SERIN_SOURCE_URI, SERIN_SAMPLE_URI, SERIN_SOURCE_ENDPOINT, SERIN_CAPTURE_URI, SERIN_CAPTURE_ENDPOINT,
SERIN_RETRAIN_JOB); the new version goes to the source's endpoint
and its own S3 keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, from a Secret the template mounts):

1. the served traffic since the alarm started, joined with the ground truth sent back for it
   (the rows `serin capture export` gives), waiting up to --wait for --min-rows with truth;
2. the serving model's estimator, unfitted (scikit-learn's `clone`: the same kind and
   hyperparameters), fitted on those rows: the world the model must now fit;
3. the new artifact and a sample of those rows (the reference the new version's drift is judged
   against) uploaded under --out/{job}/, never over another version's files;
4. the Model's spec.source pointed at them (a merge patch: the only right its ServiceAccount needs
   is get and patch on that Model). Serin converts and canaries the new version like any other.

Exit codes: 0 done; 2 not enough labelled traffic (nothing changed); 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from serin.runtime.capture import CaptureSettings, sink_for
from serin.runtime.capture_export import objects, table


class NotEnoughTraffic(Exception):
    pass


def _s3(endpoint: str | None) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"),
                        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"])


def _split(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3":
        raise ValueError(f"{uri}: this example trainer reads and writes s3:// only")
    return parts.netloc, parts.path.lstrip("/")


def labelled_rows(model: str, namespace: str, since: float, min_rows: int, wait: float) -> Any:
    """The captured rows since `since` that have their truth, once there are `min_rows` of them."""
    endpoint = os.environ.get("SERIN_CAPTURE_ENDPOINT")
    settings = CaptureSettings.parse(json.dumps({"share": 1, "uri": os.environ["SERIN_CAPTURE_URI"],
                                                 "s3": {"endpoint": endpoint} if endpoint else {}}), model, "")
    deadline = time.monotonic() + wait
    while True:
        frame = table(objects(sink_for(settings), f"{namespace}/{model}/", since), since)
        labelled = frame[frame["truth"].notna()] if "truth" in frame else frame.iloc[0:0]
        print(f"trainer: {len(frame)} rows captured since the alarm, {len(labelled)} with truth", flush=True)
        if len(labelled) >= min_rows:
            return labelled
        if time.monotonic() > deadline:
            raise NotEnoughTraffic(f"{len(labelled)} rows with truth since the alarm, {min_rows} needed")
        time.sleep(5)


def features_of(sample_header: list[str], frame: Any) -> Any:
    """The captured inputs under the sample's column names: a 2-D input `input` is captured as
    input_0, input_1, ...; one input per feature keeps its own name."""
    import pandas as pd

    if all(name in frame for name in sample_header):
        return frame[sample_header].astype("float32")
    wide = sorted((c for c in frame.columns if c.startswith("input_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    if len(wide) < len(sample_header):
        raise ValueError(f"the captured inputs ({', '.join(wide) or 'none'}) do not give the sample's "
                         f"{len(sample_header)} features")
    return pd.DataFrame(frame[wide[:len(sample_header)]].to_numpy(dtype="float32"), columns=sample_header)


def set_source(model: str, namespace: str, uri: str, sample_uri: str, sha256: str) -> None:
    """The Model's spec.source, patched with the Pod's own ServiceAccount."""
    asyncio.run(_patch_source(model, namespace, uri, sample_uri, sha256))


async def _patch_source(model: str, namespace: str, uri: str, sample_uri: str, sha256: str) -> None:
    from kubernetes_asyncio import client, config

    config.load_incluster_config()
    async with client.ApiClient() as api:
        await client.CustomObjectsApi(api).patch_namespaced_custom_object(
            "serin.dev", "v1alpha1", namespace, "models", model,
            # What it wrote, wholly: a joblib scikit-learn model and a sample of features alone
            # (the spec may still say the format and labels column of another version, an ONNX one
            # rolled back, say); the S3 settings stay, the artifact is in the same store.
            {"spec": {"source": {"uri": uri, "sampleUri": sample_uri, "sha256": sha256, "format": "sklearn",
                                 "sampleLabels": None}}},
            _content_type="application/merge-patch+json")  # type: ignore[call-arg]  # passed through **kwargs


def run(out: str, min_rows: int, wait: float, point: Callable[[str, str, str, str, str], None] = set_source) -> int:
    import joblib
    from sklearn.base import clone

    env = os.environ
    model, namespace, job = env["SERIN_MODEL"], env["SERIN_NAMESPACE"], env.get("SERIN_RETRAIN_JOB", "manual")
    since = dt.datetime.fromisoformat(env["SERIN_ALARM_SINCE"].replace("Z", "+00:00")).timestamp()
    s3 = _s3(env.get("SERIN_SOURCE_ENDPOINT") or env.get("SERIN_CAPTURE_ENDPOINT") or None)
    bucket, key = _split(env["SERIN_SAMPLE_URI"])
    header = s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-4095")["Body"].read().decode().splitlines()[0]
    columns = [c.strip() for c in header.split(",")]
    bucket, key = _split(env["SERIN_SOURCE_URI"])
    serving = joblib.load(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    rows = labelled_rows(model, namespace, since, min_rows, wait)
    x = features_of(columns, rows)
    y = rows["truth"].astype(int).to_numpy()
    fitted = clone(serving).fit(x.to_numpy(), y)
    print(f"trainer: {type(fitted).__name__} fitted on {len(x)} rows; accuracy on them "
          f"{float((fitted.predict(x.to_numpy()) == y).mean()):.3f}", flush=True)
    artifact = io.BytesIO()
    joblib.dump(fitted, artifact)
    sample = x.sample(n=min(len(x), 2000), random_state=0).to_csv(index=False).encode()
    out_bucket, prefix = _split(out.rstrip("/") + "/" + job)
    uris = {}
    for name, body in (("model.joblib", artifact.getvalue()), ("sample.csv", sample)):
        s3.put_object(Bucket=out_bucket, Key=f"{prefix}/{name}", Body=body)
        uris[name] = f"s3://{out_bucket}/{prefix}/{name}"
    point(model, namespace, uris["model.joblib"], uris["sample.csv"], hashlib.sha256(artifact.getvalue()).hexdigest())
    print(f"trainer: {namespace}/{model} spec.source -> {uris['model.joblib']}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serin.local.trainer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="s3://BUCKET/PREFIX: the new version goes under {out}/{job}/")
    parser.add_argument("--min-rows", type=int, default=2000, help="rows with truth needed (default 2000)")
    parser.add_argument("--wait", type=float, default=300, help="seconds to wait for them (default 300)")
    args = parser.parse_args(argv)
    try:
        return run(args.out, args.min_rows, args.wait)
    except NotEnoughTraffic as err:
        print(f"trainer: {err}: nothing changed", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


# -- running it: the Job template and the rights it needs (the demo and the cluster tier) ------------


def rbac(namespace: str, model: str) -> list[dict[str, Any]]:
    """The trainer's ServiceAccount, and get + patch on its one Model: all it needs of Kubernetes."""
    name = f"{model}-trainer"
    meta = {"name": name, "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": [{"apiGroups": ["serin.dev"], "resources": ["models"], "resourceNames": [model],
                    "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ]


def job_template(model: str, image: str, out: str, s3_secret: str, min_rows: int = 2000) -> dict[str, Any]:
    """spec.monitoring.retrain.template running this trainer in `image` (any Serin image has it),
    unprivileged (the restricted Pod Security profile), with the S3 keys of `s3_secret`."""
    return {"spec": {"backoffLimit": 0, "activeDeadlineSeconds": 600, "template": {"spec": {
        "serviceAccountName": f"{model}-trainer",
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "train", "image": image,
            "command": ["python", "-m", "serin.local.trainer", "--out", out, "--min-rows", str(min_rows),
                        "--wait", "180"],
            "envFrom": [{"secretRef": {"name": s3_secret}}],
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
        "volumes": [{"name": "tmp", "emptyDir": {}}]}}}}
