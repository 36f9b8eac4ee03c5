"""VotingClassifier with scikit-learn's default flatten_transform=True: skl2onnx refuses it, Serin
converts a copy that predicts the same (serin.converters.voting), and the parity proof compares
the graph with the user's own model. The zoo (test_zoo.py) converts soft and hard voting, alone
and in a Pipeline; these tests pin down why that is sound."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serin.converters import voting, zoo
from sklearn.ensemble import VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

Convert = Callable[..., Any]
X, Y, SAMPLE = zoo.classification(classes=3)


@pytest.mark.parametrize("kind", ["soft", "hard"])
@pytest.mark.parametrize("in_pipeline", [False, True], ids=["alone", "in_pipeline"])
def test_the_copy_predicts_what_the_model_predicts_and_the_model_is_left_alone(
        kind: str, in_pipeline: bool) -> None:
    voter = zoo.voting(kind, weights=[2, 1, 1, 1])
    model: Any = make_pipeline(StandardScaler(), voter) if in_pipeline else voter
    model.fit(X, Y)
    native_predict = model.predict(SAMPLE)

    copy = voting.for_onnx(model)

    converted = copy[-1] if in_pipeline else copy
    assert copy is not model and converted is not voter
    assert converted.flatten_transform is False
    assert voter.flatten_transform is True and voter.weights == [2, 1, 1, 1]  # not changed
    # Fitted members shared, not copied or refitted.
    assert all(a is b for a, b in zip(converted.estimators_, voter.estimators_, strict=True))
    np.testing.assert_array_equal(copy.predict(SAMPLE), native_predict)
    if kind == "soft":  # flatten_transform shapes transform() alone: predict_proba is the same
        np.testing.assert_array_equal(copy.predict_proba(SAMPLE), model.predict_proba(SAMPLE))
        assert voter.transform(SAMPLE).shape == (len(SAMPLE), 4 * 3)
        assert converted.transform(SAMPLE).shape == (4, len(SAMPLE), 3)


def test_models_without_a_voting_classifier_are_returned_as_they_are() -> None:
    logistic = LogisticRegression().fit(X, Y)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y)
    assert voting.for_onnx(logistic) is logistic
    assert voting.for_onnx(pipeline) is pipeline


def test_a_voting_classifier_voting_inside_another_is_rewritten_too() -> None:
    """A member's predict_proba is what the outer classifier reads: skl2onnx converts the member
    as it is, so it too gets the copy."""
    inner = zoo.voting("soft")
    model = VotingClassifier([("inner", inner), ("logistic", LogisticRegression())],
                             voting="soft").fit(X, Y)
    copy = voting.for_onnx(model)
    assert copy.estimators_[0].flatten_transform is False
    assert model.estimators_[0].flatten_transform is True
    assert copy.estimators_[1] is model.estimators_[1]
    np.testing.assert_array_equal(copy.predict_proba(SAMPLE), model.predict_proba(SAMPLE))


def test_hard_voting_vote_shares_are_the_weighted_votes_behind_predict() -> None:
    model = make_pipeline(StandardScaler(), zoo.voting("hard", weights=[2, 1, 1, 1])).fit(X, Y)
    shares = voting.vote_shares(model, SAMPLE)
    assert shares is not None and shares.shape == (len(SAMPLE), 3)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert set(np.round(shares.ravel() * 5, 9)) <= {0, 1, 2, 3, 4, 5}  # weights 2+1+1+1
    classes = model.classes_
    np.testing.assert_array_equal(classes[shares.argmax(axis=1)], model.predict(SAMPLE))
    assert voting.vote_shares(zoo.voting("soft").fit(X, Y), SAMPLE) is None


def _dropped_member() -> tuple[Any, Any]:
    import pandas as pd

    model = zoo.voting("soft", weights=[1, 5, 1, 3])
    model.set_params(tree="drop")  # weights then name four members, estimators_ holds three
    return model.fit(X, Y), pd.DataFrame(SAMPLE, columns=[f"f{i}" for i in range(4)])


def test_weights_follow_their_members_when_one_is_dropped(tmp_path: Path,
                                                          convert: Convert) -> None:
    """skl2onnx reads weights[i] beside estimators_[i] and calls weights.sum(): a list of
    weights, or one naming a dropped member, would fail or weigh the wrong member."""
    entry = zoo.ZooModel("voting_dropped_member", "sklearn", ".joblib", _dropped_member)
    artifact, sample, model, _ = entry.materialize(tmp_path / "zoo")
    outcome = convert(artifact, sample, out=tmp_path / "out")
    assert outcome.report["passed"], outcome.report["reason"]
    assert outcome.report["parity"]["max_abs_diff"] <= 1e-6
    assert model.weights == [1, 5, 1, 3]
    copy = voting.for_onnx(model)
    np.testing.assert_array_equal(copy.weights, [1.0, 1.0, 3.0])


def test_a_voting_classifier_used_as_a_transformer_is_not_rewritten() -> None:
    """Before the last step its transform() output is what the next step reads: there
    flatten_transform matters, so skl2onnx's refusal stands."""
    voter = zoo.voting("soft")
    model = Pipeline([("vote", voter), ("head", LogisticRegression())]).fit(X, Y)
    copy = voting.for_onnx(model)
    assert copy is model and copy[0].flatten_transform is True


def test_the_proof_compares_the_graph_with_the_users_model(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path, convert: Convert) -> None:
    """Were the converted copy to predict otherwise than the user's model, parity would refuse it:
    the native side of the proof is the model as loaded, never the copy."""
    rewrite = voting.for_onnx

    def skewed(model: Any) -> Any:
        converted = rewrite(model)
        if converted is not model:
            converted.weights = np.array([0.0, 0.0, 0.0, 1.0])  # naive Bayes alone
        return converted

    monkeypatch.setattr(voting, "for_onnx", skewed)
    artifact, sample, _, _ = zoo.by_id("voting_soft_multiclass").materialize(tmp_path / "zoo")
    outcome = convert(artifact, sample, out=tmp_path / "out")
    assert not outcome.report["passed"]
    assert outcome.report["reason"].startswith("parity failed: VotingClassifier(")
