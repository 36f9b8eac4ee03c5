"""What the S3 model store costs beside a claim (issue 34 #3), measured side by side in one run.

Per zoo model: the publish step writing the version to a directory (a claim, as mounted) and to
the S3 store (versitygw on loopback, conditional writes, each file once), and the predictor's
fetch of it (serin.runtime.fetch: two GETs with ETag checks) beside a plain copy of the same files
(what a claim costs a Pod: none, it is mounted; the copy is the floor of reading the bytes). The
ratios are what to read: absolute times move with the machine.

    python bench/model_store_bench.py [MODEL_ID ...]   # default: a small and a large model
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

from serin.converters import zoo  # noqa: E402
from serin.converters.conversion import Request, run  # noqa: E402
from serin.converters.publish import S3Sink, SampleSource, publish  # noqa: E402
from serin.converters.s3 import Keys, S3Settings  # noqa: E402
from serin.local.s3 import start_s3  # noqa: E402
from serin.runtime import fetch  # noqa: E402

DEFAULT = ["realistic_imputer_scaler_logistic_nan", "realistic_random_forest_regressor_deep"]
REPEATS = 5


def main(ids: list[str]) -> None:
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        s3 = start_s3(root / "s3")
        try:
            user = s3.create_user("bench-store")
            s3.create_bucket("bench-models")
            s3.grant("bench-models", "versions/ml", user)
            settings, keys = S3Settings(endpoint=s3.url, region=s3.region), Keys(user.access_key, user.secret_key)
            env = {"AWS_ACCESS_KEY_ID": user.access_key, "AWS_SECRET_ACCESS_KEY": user.secret_key,
                   fetch.SETTINGS_ENV: json.dumps({"endpoint": s3.url, "region": s3.region})}
            print(f"{'model':42} {'MB':>6} {'publish dir s':>13} {'publish S3 s':>12} {'ratio':>6} "
                  f"{'copy s':>7} {'fetch S3 s':>10} {'ratio':>6}")
            for model_id in ids:
                entry = zoo.by_id_realistic(model_id) if model_id.startswith("realistic_") else zoo.by_id(model_id)
                artifact, sample, _, _ = entry.materialize(root / model_id)
                scratch = root / model_id / "scratch"
                assert run(Request(str(artifact), str(sample), scratch)).report["passed"]
                source = SampleSource(sample)
                to_dir, to_s3, copy, get = [], [], [], []
                for i in range(REPEATS):  # alternated, so that drift in the machine hits both
                    directory, served = root / model_id / f"store-{i}", root / model_id / f"copy-{i}"
                    place = f"s3://bench-models/versions/ml/{model_id}-g{i}"
                    t0 = time.perf_counter()
                    publish(scratch, directory, artifact, source)
                    t1 = time.perf_counter()
                    publish(scratch, S3Sink(place, settings, keys), artifact, source)
                    t2 = time.perf_counter()
                    served.mkdir()
                    for name in fetch.FILES:
                        shutil.copyfile(directory / name, served / name)
                    t3 = time.perf_counter()
                    fetch.fetch(place, root / model_id / f"fetched-{i}", env)
                    t4 = time.perf_counter()
                    to_dir.append(t1 - t0)
                    to_s3.append(t2 - t1)
                    copy.append(t3 - t2)
                    get.append(t4 - t3)
                size = sum((root / model_id / "store-0" / n).stat().st_size for n in fetch.FILES) / 1e6
                md, ms, mc, mg = (statistics.median(x) for x in (to_dir, to_s3, copy, get))
                print(f"{model_id:42} {size:6.1f} {md:13.3f} {ms:12.3f} {ms / md:6.2f} {mc:7.4f} {mg:10.3f} "
                      f"{mg / mc:6.0f}")
        finally:
            s3.stop()
    print(f"(medians of {REPEATS}; publish includes the profile rebuilt from the sample, the same in both)")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
