"""Model versions for the demo, the end-to-end tests and the benchmarks: small, made here, no
downloads. A bad version is bad through its own behaviour, never a flag that makes the runtime lie:

- `drifted`: a scikit-learn model trained on data from a shifted distribution. Its reference
  profile comes from that data, so production traffic shows high input PSI against it.
- `erroring`: an ONNX model whose graph indexes a table with a value computed from feature 0.
  onnxruntime raises for |f0| >= 2 (about 4.6 % of production rows), as a model with an unguarded
  lookup would.
- `slow`: an ONNX model that computes its answer correctly, then spends real CPU in a chain of
  MatMuls that a careless export left in the graph (tens of milliseconds a row).

Production traffic (`production_rows`) is standard normal in 4 features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURES = ["f0", "f1", "f2", "f3"]


@dataclass(frozen=True)
class VersionFiles:
    model: Path
    sample: Path
    format: str


def production_rows(n: int, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))).astype("float32")
    x[:, :2] += shift
    return x


def true_labels(x: np.ndarray) -> np.ndarray:
    """The ground truth of production rows: what the load generator sends as feedback."""
    return (x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] > 0).astype(int)


_labels = true_labels


def _fit(seed: int, shift: float = 0.0):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    x = production_rows(2000, seed=seed, shift=shift)
    return LogisticRegression(C=0.5 + seed % 3).fit(x, _labels(x - shift * np.array([1, 1, 0, 0], "float32"))), x


def _write_sample(path: Path, x: np.ndarray) -> None:
    import pandas as pd

    pd.DataFrame(x[:1000], columns=FEATURES).to_csv(path, index=False)


def sklearn_version(directory: Path, seed: int, shift: float = 0.0) -> VersionFiles:
    import joblib

    directory.mkdir(parents=True, exist_ok=True)
    model, x = _fit(seed, shift)
    joblib.dump(model, directory / "model.joblib")
    _write_sample(directory / "sample.csv", x)
    return VersionFiles(directory / "model.joblib", directory / "sample.csv", "sklearn")


def less_accurate_version(directory: Path, seed: int = 13) -> VersionFiles:
    """A model that serves the same traffic without errors, latency or input drift, but is less
    often right: it learnt from feature 0 alone (the truth also weighs features 1 and 2), about 84 %
    accurate against about 99 % for `sklearn_version`. Only ground truth can tell."""
    import joblib
    from sklearn.linear_model import LogisticRegression

    directory.mkdir(parents=True, exist_ok=True)
    x = production_rows(2000, seed=seed)
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    joblib.dump(model, directory / "model.joblib")
    _write_sample(directory / "sample.csv", x)
    return VersionFiles(directory / "model.joblib", directory / "sample.csv", "sklearn")


def _base_onnx(seed: int):  # type: ignore[no-untyped-def]
    from skl2onnx import to_onnx

    model, x = _fit(seed)
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    onx.graph.input[0].name = "input"  # one name for every version's input tensor
    for node in onx.graph.node:
        node.input[:] = ["input" if i == "X" else i for i in node.input]
    return onx, x


def _rewire_probabilities(onx, extra_nodes, extra_inits, term: str) -> None:  # type: ignore[no-untyped-def]
    """probabilities := probabilities_raw + term (term is zero: the answer stays correct)."""
    from onnx import helper

    graph = onx.graph
    for node in graph.node:
        node.output[:] = ["probabilities_raw" if o == "probabilities" else o for o in node.output]
    graph.node.extend(extra_nodes)
    graph.node.append(helper.make_node("Add", ["probabilities_raw", term], ["probabilities"]))
    graph.initializer.extend(extra_inits)


def erroring_version(directory: Path, seed: int = 11, limit: float = 2.0) -> VersionFiles:
    """A model that raises on every row with |f0| >= `limit` (about): 2 makes 5 % of rows fail, so
    most requests of 20 rows do (a hard failure); a `limit` that only a few rows of the traffic
    reach makes a subtle one (subtle_limit)."""
    from onnx import TensorProto, helper, numpy_helper

    onx, x = _base_onnx(seed)
    inits = [
        numpy_helper.from_array(np.array([0], "int64"), "start0"),
        numpy_helper.from_array(np.array([1], "int64"), "end1"),
        numpy_helper.from_array(np.array([1], "int64"), "axis1"),
        numpy_helper.from_array(np.array(4.0 / limit, "float32"), "scale"),
        numpy_helper.from_array(np.zeros(4, "float32"), "table"),
    ]
    nodes = [
        helper.make_node("Slice", ["input", "start0", "end1", "axis1"], ["f0"]),
        helper.make_node("Mul", ["f0", "scale"], ["f0scaled"]),
        helper.make_node("Floor", ["f0scaled"], ["f0floor"]),
        helper.make_node("Cast", ["f0floor"], ["lookup"], to=TensorProto.INT64),
        # Valid indices are [-4, 3]: rows with |f0| >= limit raise in onnxruntime.
        helper.make_node("Gather", ["table", "lookup"], ["looked_up"], axis=0),
    ]
    _rewire_probabilities(onx, nodes, inits, "looked_up")
    return _save_onnx(directory, onx, x)


def subtle_limit(pool: np.ndarray, rows: int, share: float) -> float:
    """The erroring_version `limit` at which about `share` of requests fail when requests are the
    consecutive `rows`-row slices of `pool` (what the load generator sends)."""
    slices = len(pool) // rows
    worst = np.sort(np.abs(pool[: slices * rows, 0]).reshape(slices, rows).max(axis=1))[::-1]
    failing = max(1, round(share * slices))
    # Between the failing slices' largest |f0| and the next one's: exactly `failing` slices fail.
    return float((worst[failing - 1] + worst[failing]) / 2)


def slow_version(directory: Path, seed: int = 12, depth: int = 2000) -> VersionFiles:
    from onnx import helper, numpy_helper

    onx, x = _base_onnx(seed)
    rng = np.random.default_rng(seed)
    # One shared 512x512 weight applied `depth` times: real CPU per row with a 1 MB file. Scaled so
    # activations decay slowly but stay normal floats (no inf or NaN reaches the zero term).
    w = (rng.normal(size=(512, 512)) * 0.9 / np.sqrt(512)).astype("float32")
    inits = [numpy_helper.from_array((rng.normal(size=(4, 512)) * 0.5).astype("float32"), "w_in"),
             numpy_helper.from_array(w, "w_loop"),
             numpy_helper.from_array(np.array(0.0, "float32"), "zero"),
             numpy_helper.from_array(np.array([1], "int64"), "axes1")]
    nodes = [helper.make_node("MatMul", ["input", "w_in"], ["h0"])]
    for i in range(depth):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w_loop"], [f"h{i + 1}"]))
    nodes += [helper.make_node("ReduceSum", [f"h{depth}", "axes1"], ["busy"], keepdims=1),
              helper.make_node("Mul", ["busy", "zero"], ["busy_zero"])]
    _rewire_probabilities(onx, nodes, inits, "busy_zero")
    # ~1 GFLOP per row: its conversion runs the sample three times (the passthrough's "native"
    # run, the parity run, and publish's rebuild of the profile). 100 rows took 5.5 minutes in a
    # Job on a node sharing 2 cores with the other test worker; 30 rows are enough for parity,
    # and what the version is for, its latency, is measured on served requests.
    return _save_onnx(directory, onx, x, rows=SLOW_SAMPLE_ROWS)


SLOW_SAMPLE_ROWS = 30


def _save_onnx(directory: Path, onx, x: np.ndarray,  # type: ignore[no-untyped-def]
               rows: int | None = None) -> VersionFiles:
    import onnx

    directory.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(onx)
    onnx.save(onx, str(directory / "model.onnx"))
    # The sample is what the model was validated on: rows it answers (|f0| < 2 for `erroring`).
    keep = x[np.abs(x[:, 0]) < 2][:rows]
    _write_sample(directory / "sample.csv", keep)
    return VersionFiles(directory / "model.onnx", directory / "sample.csv", "onnx")


def drifted_version(directory: Path, seed: int = 13, shift: float = 1.5) -> VersionFiles:
    return sklearn_version(directory, seed, shift=shift)
