"""Metric arithmetic and request decoding without a server."""

from __future__ import annotations

import numpy as np
import pytest
from serin.runtime import metric_names
from serin.runtime.decode import RequestError, decode_v1, decode_v2, parse_json
from serin.runtime.drift import Binner, Window, psi
from serin.runtime.profile import Feature, ProfileError, parse_profile
from serin.runtime.signature import TensorSpec

SPEC = TensorSpec("input", "FP32", np.dtype(np.float32), (None, 2))


def numeric(name: str = "f0", column: int = 0) -> Feature:
    return Feature(name, "input", column, "numeric", cuts=np.array([0.0]),
                   proportions=np.array([0.5, 0.5]))


@pytest.mark.parametrize(("counts", "expected", "want"), [
    ([50, 50], [0.5, 0.5], 0.0),
    ([25, 75], [0.5, 0.5], (0.25 - 0.5) * np.log(0.5) + (0.75 - 0.5) * np.log(1.5)),
    ([100, 0], [0.5, 0.5], None),  # empty bin: finite thanks to the epsilon floor
], ids=["identical", "shifted", "empty-bin"])
def test_psi(counts: list[int], expected: list[float], want: float | None) -> None:
    got = psi(np.array(counts, float), np.array(expected))
    assert np.isfinite(got)
    if want is not None:
        assert got == pytest.approx(want)
    else:
        assert got > 1.0


def test_window_keeps_only_the_last_rows_in_a_ring() -> None:
    binner = Binner([numeric()], {"input": SPEC})
    window = Window(binner, capacity=4)
    window.add({"input": np.array([[-1, 0], [-1, 0], [-1, 0]], np.float32)}, 3)
    window.flush()
    assert window.counts().tolist() == [3, 0]
    window.add({"input": np.array([[1, 0], [1, 0], [1, 0]], np.float32)}, 3)
    window.flush()
    assert window.filled == 4 and window.counts().tolist() == [1, 3]
    # Pending rows older than one window are dropped before they are ever binned.
    for _ in range(10):
        window.add({"input": np.array([[-1, 0]], np.float32)}, 1)
    window.flush()
    assert window.counts().tolist() == [4, 0]


def test_window_holds_about_one_window_of_pending_batch_rows() -> None:
    window = Window(Binner([numeric()], {"input": SPEC}), capacity=2000)
    for i in range(10):
        window.add({"input": np.full((1000, 2), i, np.float32)}, 1000)
    assert [int(f["input"][0, 0]) for f in window.pending] == [8, 9]
    window.flush()
    assert window.filled == 2000 and window.counts().tolist() == [0, 2000]


def test_binner_categorical_other_bin() -> None:
    spec = TensorSpec("color", "BYTES", np.dtype(object), (None, 1))
    feat = Feature("color", "color", 0, "categorical", categories=("red", "blue"),
                   proportions=np.array([0.5, 0.4, 0.1]))
    binner = Binner([feat], {"color": spec})
    bins = binner.bin({"color": np.array([["red"], ["blue"], ["pink"]], dtype=object)})
    assert bins[:, 0].tolist() == [0, 1, 2]


def test_binner_skips_features_the_model_lacks() -> None:
    binner = Binner([numeric("f0", 0), numeric("f9", 9), Feature(
        "g", "missing", 0, "numeric", cuts=np.zeros(0), proportions=np.ones(1))], {"input": SPEC})
    assert [f.name for f in binner.features] == ["f0"]


def test_profile_rejects_bad_versions_and_bins() -> None:
    with pytest.raises(ProfileError, match="version"):
        parse_profile({"version": 2})
    bad = {"version": 1, "features": [{"name": "a", "input": "i", "kind": "numeric",
                                       "cuts": [1, 2], "proportions": [1.0]}]}
    with pytest.raises(ProfileError, match="2 cuts need 3 proportions"):
        parse_profile(bad)


@pytest.mark.parametrize(("payload", "message"), [
    ({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32",
                  "data": [1, 2 ** 70]}]}, "input 'input'"),
    ({"inputs": [{"name": "input", "shape": [True, 2], "datatype": "FP32", "data": [1, 2]}]},
     "'shape' must be a list"),
], ids=["huge-int", "bool-dim"])
def test_decode_v2_rejects(payload: object, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        decode_v2(payload, {"input": SPEC})


def test_decode_v1_rows_and_objects_agree() -> None:
    a, n = decode_v1({"instances": [[1, 2], [3, 4]]}, {"input": SPEC})
    b, _ = decode_v1({"instances": [{"input": [1, 2]}, {"input": [3, 4]}]}, {"input": SPEC})
    assert n == 2 and a["input"].dtype == np.float32
    assert np.array_equal(a["input"], b["input"])


def test_parse_json_accepts_python_nan() -> None:
    assert np.isnan(parse_json(b"[NaN]")[0])
    with pytest.raises(RequestError, match="invalid JSON"):
        parse_json(b"[nan")


def test_metric_names_module_is_import_light() -> None:
    import subprocess
    import sys

    code = ("import sys, serin.runtime.metric_names; "
            "print(any(m in sys.modules for m in ('onnxruntime', 'numpy', 'prometheus_client')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert metric_names.LABELS[metric_names.REQUESTS_TOTAL] == (
        "model", "revision", "protocol", "code")
