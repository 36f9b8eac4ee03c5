"""Metric arithmetic and request decoding without a server."""

from __future__ import annotations

import numpy as np
import pytest
from serin.runtime import metric_names
from serin.runtime.decode import RequestError, decode_v1, decode_v2, parse_json
from serin.runtime.drift import Binner, Window, chi2_pvalue, holm, ks_pvalue, psi
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


def test_drift_tests_agree_with_scipy_on_binned_samples() -> None:
    """The runtime's tests see only bin counts and the profile's proportions; on the same bins,
    scipy's tests on the raw samples (bin indices as values) must give the same p-values."""
    from scipy import stats

    rng = np.random.default_rng(5)
    for shift in (0.0, 0.1, 0.3):
        reference = np.digitize(rng.normal(size=4000), np.linspace(-1.5, 1.5, 9))
        window = np.digitize(rng.normal(shift, size=1000), np.linspace(-1.5, 1.5, 9))
        ref_counts = np.bincount(reference, minlength=10)
        counts = np.bincount(window, minlength=10)
        proportions = ref_counts / ref_counts.sum()
        # Kolmogorov's limiting distribution at the same gap (scipy's "asymp" now uses the exact
        # one-sample law at round(n·m/(n+m)) rows instead: within 0.003 of it here).
        ks = stats.ks_2samp(window, reference, method="asymp")
        limit = stats.kstwobign.sf(np.sqrt(1000 * 4000 / 5000) * ks.statistic)
        assert ks_pvalue(counts, proportions, 4000) == pytest.approx(limit, rel=1e-6, abs=1e-12)
        assert ks_pvalue(counts, proportions, 4000) == pytest.approx(ks.pvalue, abs=0.005)
        chi2 = stats.chi2_contingency(np.stack([counts, ref_counts]), correction=False).pvalue
        assert chi2_pvalue(counts, proportions, 4000) == pytest.approx(chi2, rel=1e-6, abs=1e-12)


def test_chi2_pools_rare_bins_and_needs_two() -> None:
    # Categories a window of 200 rows would expect fewer than 5 of are pooled: 6 rare ones here.
    proportions = np.array([0.5, 0.44] + [0.01] * 6)
    counts = np.array([100, 88] + [2] * 6)
    assert 0.5 < chi2_pvalue(counts, proportions, 1000) <= 1.0
    assert chi2_pvalue(np.array([10, 0]), np.array([1.0, 0.0]), 1000) == 1.0  # one bin left
    assert chi2_pvalue(np.array([0, 0]), np.array([0.5, 0.5]), 1000) == 1.0  # nothing seen


def test_holm_adjusts_step_down_and_stays_monotone() -> None:
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5})
    # sorted: a 0.01*4, c 0.03*3, b 0.04*2 -> max with c's, d 0.5*1 -> max with b's
    assert adjusted == pytest.approx({"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.5})
    assert holm({}) == {}
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}
