"""A Prometheus answer is read at the edge: whatever its shape, a malformed or non-finite answer is
no value with a reason (Inconclusive), never an exception out of the analysis tick and never a pass
(security review, issue 32, item 9)."""

from __future__ import annotations

import pytest
from serin.operator.analysis import judge_round
from serin.operator.prometheus import parse_response, parse_vector
from serin.operator.spec import AnalysisSpec, MetricSpec
from serin.operator.status import Verdict


def vector(*samples: object) -> dict[str, object]:
    return {"status": "success", "data": {"resultType": "vector", "result": list(samples)}}


def scalar(result: object) -> dict[str, object]:
    return {"status": "success", "data": {"resultType": "scalar", "result": result}}


MALFORMED_VECTORS = [
    pytest.param(vector({}), "no value", id="empty-sample"),
    pytest.param(vector("0.5"), "sample", id="sample-not-an-object"),
    pytest.param(vector({"metric": {}, "value": [0, "abc"]}), "'abc' is not a number", id="value-not-a-number"),
    pytest.param(vector({"metric": {}, "value": "0.5"}), "not a [time, value] pair", id="value-not-a-list"),
    pytest.param(vector({"metric": {}, "value": [0]}), "not a [time, value] pair", id="value-too-short"),
    pytest.param(vector({"metric": {}, "value": [0, "1", "2"]}), "not a [time, value] pair", id="value-too-long"),
    pytest.param(vector({"metric": {}, "value": None}), "not a [time, value] pair", id="value-null"),
    pytest.param(vector({"metric": {}, "value": [0, None]}), "not a string", id="value-number-null"),
    pytest.param(vector({"metric": {}, "value": [0, True]}), "not a string", id="value-number-bool"),
    pytest.param(vector({"metric": {}, "value": [0, ["1"]]}), "not a string", id="value-number-a-list"),
    pytest.param(vector({"metric": "up", "value": [0, "1"]}), "metric", id="metric-not-an-object"),
    pytest.param(vector({"metric": {}, "value": [0, "+Inf"]}), "not finite", id="plus-inf"),
    pytest.param(vector({"metric": {}, "value": [0, "-Inf"]}), "not finite", id="minus-inf"),
    pytest.param({"status": "success", "data": {"resultType": "vector", "result": {"value": [0, "1"]}}},
                 "result", id="vector-result-not-a-list"),
    pytest.param({"status": "success", "data": {"resultType": "vector", "result": "abc"}},
                 "result", id="vector-result-a-string"),
    pytest.param({"status": "success", "data": ["vector"]}, "data", id="data-not-an-object"),
]
MALFORMED_SCALARS = [
    pytest.param(scalar([0, "abc"]), "'abc' is not a number", id="scalar-not-a-number"),
    pytest.param(scalar([0, "+Inf"]), "not finite", id="scalar-plus-inf"),
    pytest.param(scalar([0, 3]), "not a string", id="scalar-value-not-a-string"),
]


@pytest.mark.parametrize(("body", "why"), MALFORMED_VECTORS + MALFORMED_SCALARS)
def test_a_malformed_answer_is_no_value_with_a_reason(body: object, why: str) -> None:
    m = parse_response("x", body)
    assert m.value is None
    assert m.error.startswith("malformed prometheus answer") and why in m.error, m.error


@pytest.mark.parametrize(("body", "why"), MALFORMED_VECTORS)
def test_a_malformed_vector_by_label_is_flagged(body: object, why: str) -> None:
    values, reason = parse_vector(body, "le")
    assert reason.startswith("malformed prometheus answer") and why in reason, reason
    assert all(isinstance(v, float) for v in values.values())


def test_by_label_skips_a_malformed_sample_and_says_so() -> None:
    body = vector({"metric": {"le": "0.5"}, "value": [0, "3"]}, {"metric": {"le": "1"}, "value": [0, "abc"]},
                  {"metric": {"le": "+Inf"}, "value": [0, "7"]})
    values, reason = parse_vector(body, "le")
    assert values == {"0.5": 3.0, "+Inf": 7.0}
    assert reason == "malformed prometheus answer: sample 1: value 'abc' is not a number"


def test_by_label_of_a_well_formed_answer() -> None:
    body = vector({"metric": {"le": "0.5"}, "value": [0, "3"]}, {"metric": {}, "value": [0, "1"]},
                  {"metric": {"le": "1"}, "value": [0, "NaN"]})
    assert parse_vector(body, "le") == ({"0.5": 3.0}, "")  # no such label, or NaN: no data, not malformed


@pytest.mark.parametrize("text", ["+Inf", "-Inf"])
def test_a_non_finite_value_is_inconclusive_for_a_min_only_metric(text: str) -> None:
    """+Inf is not below any min: read as a number it would pass. It is no value instead."""
    spec = AnalysisSpec(metrics=(MetricSpec("accuracy", query="q", min=0.9),))
    measured = parse_response("accuracy", vector({"metric": {}, "value": [0, text]}))
    record, = judge_round(spec, (measured,), {}, generation=1, at="2024-01-01T00:00:00Z").records
    assert record.verdict == Verdict.INCONCLUSIVE, record
    assert "not finite" in record.reason and record.value is None
