"""`serin capture export MODEL [-n NS] --since 24h --out rows.parquet`: the captured traffic of a
Model joined with the ground truth sent back for it, one row per predicted row, the table a trainer
wants (capture.py writes the records).

Where to read comes from the Model's spec.serving.capture (its uri and S3 settings), or from
`--uri` (then no cluster is needed: a bucket or a directory). S3 keys are the caller's own
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never the Model's Secret.

Columns: `id`, `row` (the row's index in its request), `time` (UTC), `revision` (that answered),
one column per input and output (a 2-D one as `name_0`, `name_1`, ...), then `truth` and
`truth_time` where truth was sent (null elsewhere). Every object of the Model is listed, and only
those of the hours since `--since` are read.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from serin.runtime.capture import PREDICTIONS, TRUTH, CaptureSettings, DirectorySink, S3Sink, sink_for


class ExportError(Exception):
    pass


def objects(sink: Any, prefix: str, since: float) -> Iterator[bytes]:
    """The captured objects under `prefix` ({namespace}/{model}/) whose hour is at or after `since`'s."""
    floor = dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y-%m-%d/%H")
    if isinstance(sink, S3Sink):
        pages = sink.client.get_paginator("list_objects_v2").paginate(Bucket=sink.bucket,
                                                                       Prefix=sink._key(prefix))
        for page in pages:
            for o in page.get("Contents", []):
                if _hour(o["Key"]) >= floor:
                    yield sink.client.get_object(Bucket=sink.bucket, Key=o["Key"])["Body"].read()
    else:
        assert isinstance(sink, DirectorySink)
        base = sink.root / prefix
        for path in sorted(base.rglob("*.jsonl.gz")) if base.is_dir() else []:
            if _hour(str(path.relative_to(sink.root))) >= floor:
                yield path.read_bytes()


def _hour(key: str) -> str:
    """.../{kind}/{YYYY-MM-DD}/{HH}/{name} → "YYYY-MM-DD/HH"."""
    parts = key.split("/")
    return "/".join(parts[-3:-1]) if len(parts) >= 3 else ""


def table(blobs: Iterator[bytes], since: float) -> Any:
    """The joined table (pandas.DataFrame), one row per predicted row, oldest first."""
    import numpy as np
    import pandas as pd

    predictions: list[dict[str, Any]] = []
    truths: dict[Any, dict[str, Any]] = {}
    skipped: list[Any] = []
    for blob in blobs:
        for line in gzip.decompress(blob).splitlines():
            record = json.loads(line)
            if record.get("time", 0) < since:
                continue
            if record.get("kind") == PREDICTIONS:
                predictions.append(record)
            elif record.get("kind") == TRUTH and record.get("id") is not None:
                truths[record["id"]] = record  # one per id: the feedback endpoint takes it once
    rows: list[dict[str, Any]] = []
    for record in sorted(predictions, key=lambda r: r["time"]):
        n = int(record["rows"])
        columns: dict[str, list[Any]] = {}
        try:
            for part in ("inputs", "outputs"):
                for name, values in (record.get(part) or {}).items():
                    array = np.asarray(values, dtype=object).reshape(n, -1) if n else np.empty((0, 1))
                    if array.shape[1] == 1:
                        columns[name] = array[:, 0].tolist()
                    else:
                        columns.update({f"{name}_{j}": array[:, j].tolist() for j in range(array.shape[1])})
        except ValueError:  # an output with no row per input row (a model's own shape): left out
            skipped.append(record.get("id"))
            continue
        truth = truths.get(record.get("id"))
        truth_rows = list(truth["truth"]) if truth is not None and isinstance(truth.get("truth"), list) else None
        for i in range(n):
            row = {"id": record.get("id"), "row": i, "time": record["time"], "revision": record.get("revision")}
            row.update({name: values[i] for name, values in columns.items()})
            row["truth"] = truth_rows[i] if truth_rows is not None and i < len(truth_rows) else None
            row["truth_time"] = truth["time"] if truth is not None else None
            rows.append(row)
    if skipped:
        print(f"serin capture: {len(skipped)} captured requests left out: an output does not have one entry per "
              "input row", file=sys.stderr)
    frame = pd.DataFrame(rows)
    for column in ("time", "truth_time"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame


def write(frame: Any, out: Path) -> None:
    if out.suffix == ".parquet":
        try:
            frame.to_parquet(out, index=False)
        except ImportError as exc:
            raise ExportError(f"writing Parquet needs pyarrow ({exc}); pip install pyarrow, or use --out FILE.csv "
                              "or FILE.jsonl") from exc
    elif out.suffix == ".csv":
        frame.to_csv(out, index=False)
    elif out.suffix in (".jsonl", ".json"):
        frame.to_json(out, orient="records", lines=True, date_format="iso")
    else:
        raise ExportError(f"--out {out}: name a .parquet, .csv or .jsonl file")


async def _capture_of(model: str, namespace: str, kubeconfig: str | None) -> dict[str, Any]:
    from kubernetes_asyncio import client, config
    from kubernetes_asyncio.client.rest import ApiException

    await config.load_kube_config(config_file=kubeconfig)
    async with client.ApiClient() as api:
        try:
            doc = await client.CustomObjectsApi(api).get_namespaced_custom_object(
                "serin.dev", "v1alpha1", namespace, "models", model)
        except ApiException as err:
            raise ExportError(f"model {namespace}/{model}: {err.reason}") from err
    capture = ((doc.get("spec") or {}).get("serving") or {}).get("capture")
    if not capture:
        raise ExportError(f"model {namespace}/{model} captures nothing (spec.serving.capture is not set)")
    return dict(capture)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serin capture", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["export"])
    parser.add_argument("model")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--since", default="24h", help="how far back, e.g. 24h or 168h (default 24h)")
    parser.add_argument("--out", required=True, type=Path, help="a .parquet, .csv or .jsonl file")
    parser.add_argument("--uri", help="read here instead of the Model's spec.serving.capture.uri "
                                      "(s3://bucket[/prefix] or a directory; no cluster needed)")
    parser.add_argument("--endpoint", help="the S3 endpoint with --uri (default: the Model's, or AWS)")
    parser.add_argument("--kubeconfig", default=None)
    args = parser.parse_args(argv)
    from serin.operator.spec import parse_duration

    try:
        since = dt.datetime.now(dt.UTC).timestamp() - parse_duration(args.since)
    except ValueError:
        parser.error(f"--since {args.since!r}: not a duration such as 24h or 90m")
    try:
        capture = {"uri": args.uri, "s3": {"endpoint": args.endpoint} if args.endpoint else {}} if args.uri \
            else asyncio.run(_capture_of(args.model, args.namespace, args.kubeconfig))
        settings = CaptureSettings.parse(json.dumps({"share": 1, **capture}), args.model, "")
        frame = table(objects(sink_for(settings), f"{args.namespace}/{args.model}/", since), since)
        write(frame, args.out)
    except ExportError as err:
        print(f"serin capture: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # the store's own errors (keys refused, bucket missing): one line
        print(f"serin capture: reading the captured records failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    truth = int(frame["truth"].notna().sum()) if "truth" in frame else 0
    print(f"wrote {len(frame)} rows ({truth} with truth) of {args.namespace}/{args.model} since "
          f"{dt.datetime.fromtimestamp(since, dt.UTC):%Y-%m-%d %H:%M} UTC to {args.out}")
    return 0
