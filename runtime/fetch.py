"""The predictor's model download from Serin's S3 model store: `python -P -m serin.runtime.fetch
s3://BUCKET/PATH /mnt/models`.

KServe's pod webhook runs this as the predictor's storage-initializer: the chart's
ClusterStorageContainer (which every InferenceService of Serin's names by storageContainerName)
merges it over KServe's own init container, which passes the storageUri and the model directory
as the two arguments. KServe's own initializer is not used, for the reasons converters/s3.py gives
for sources: it downloads every object under the URI as a prefix, falls back to the node's cloud
identity when it has no keys, and says little about why a download failed.

What it fetches is exactly what the publish step wrote and the runtime reads: model.onnx and
profile.json under the version's place, each checked against its ETag (converters/s3.download).
The runtime then checks model.onnx against the digest its conversion recorded
($SERIN_MODEL_SHA256), so bytes changed in the store are refused even with the store's keys.

Settings: $SERIN_MODEL_STORE_S3 (JSON: endpoint, region, addressing, verifyTls, as the chart's
conversion.modelStoreS3); keys: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional
AWS_SESSION_TOKEN, from the namespace's Secret. A failure is one line on stderr and the container's
termination message, which the operator reports in the Model's status.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from serin.converters.errors import ConversionError, FetchError, first_line
from serin.converters.s3 import MODEL_STORE, Keys, S3Settings, client, download

SETTINGS_ENV = "SERIN_MODEL_STORE_S3"
FILES = ("model.onnx", "profile.json")
TERMINATION_LOG = "/dev/termination-log"
EXIT_FAILED, EXIT_RETRY, EXIT_USAGE = 1, 4, 2


def settings_from_env(env: Mapping[str, str]) -> S3Settings:
    raw = env.get(SETTINGS_ENV) or "{}"
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ConversionError(f"${SETTINGS_ENV} is not JSON") from None
    if not isinstance(doc, dict):
        raise ConversionError(f"${SETTINGS_ENV} is not a JSON object")
    return S3Settings.parse(doc)


def fetch(uri: str, model_dir: Path, env: Mapping[str, str]) -> list[Path]:
    """The version's files from `uri` (s3://bucket/path, the version's place) into `model_dir`."""
    if not uri.startswith("s3://"):
        raise ConversionError(f"{uri} is not an s3:// URI: this storage container reads Serin's S3 model store")
    settings, keys = settings_from_env(env), Keys.from_env(env)
    base, s3 = uri.rstrip("/"), client(settings, keys)
    return [download(f"{base}/{name}", model_dir / name, settings, keys, MODEL_STORE, s3) for name in FILES]


def main(argv: list[str], env: Mapping[str, str] | None = None, termination: str = TERMINATION_LOG) -> int:
    environ = dict(os.environ) if env is None else env
    if len(argv) != 2:
        print("usage: python -m serin.runtime.fetch s3://BUCKET/PATH MODEL_DIR", file=sys.stderr)
        return EXIT_USAGE
    try:
        files = fetch(argv[0], Path(argv[1]), environ)
    except Exception as exc:  # ConversionError's reasons, and anything else as one line too
        message = f"serin model store: {exc.message if isinstance(exc, ConversionError) else first_line(exc)}"
        print(message, file=sys.stderr)
        with contextlib.suppress(OSError):  # not in a container: stderr said it
            Path(termination).write_text(message)
        return EXIT_RETRY if isinstance(exc, FetchError) else EXIT_FAILED
    print(f"fetched {', '.join(f'{f.name} ({f.stat().st_size} bytes)' for f in files)} from {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
