"""VotingClassifier: the copy skl2onnx can convert, and hard voting's native votes for the proof.

skl2onnx 1.20 refuses every VotingClassifier whose `flatten_transform` is True, scikit-learn's
default ("flatten_transform==True is not implemented yet"), soft and hard alike. The attribute
only shapes what `transform()` returns for soft voting ([N, members * classes] instead of
[members, N, classes]); `predict` and `predict_proba` never read it. Where the classifier's output
is the model's prediction, Serin converts a shallow copy with `flatten_transform=False`, and the
parity proof compares that graph with the user's own model, so the copy is vouched for row by row.

skl2onnx also reads `weights[i]` beside `estimators_[i]` and calls `weights.sum()`: a list of
weights (as scikit-learn's documentation writes them) fails, and weights naming a member set to
"drop" weigh the wrong members. The copy carries the weights of the fitted members as an array.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np


def for_onnx(model: Any) -> Any:
    """The model as skl2onnx should convert it: each VotingClassifier whose output is a
    prediction (the model, a Pipeline's last step, a member of such a classifier) replaced by a
    shallow copy. Fitted members are shared, not copied; the model passed in is never changed,
    and a model without such a classifier is returned as it is."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline) and model.steps:
        name, last = model.steps[-1]
        converted = for_onnx(last)
        if converted is last:
            return model
        # Steps before the last are transformers: a VotingClassifier there feeds transform()
        # to the next step, flatten_transform matters, and skl2onnx's refusal stands.
        return Pipeline([*model.steps[:-1], (name, converted)])
    if not isinstance(model, VotingClassifier):
        return model
    voter = copy.copy(model)
    voter.flatten_transform = False
    voter.estimators_ = [for_onnx(member) for member in model.estimators_]
    weights = member_weights(model)
    if weights is not None:
        voter.weights = weights
    return voter


def member_weights(voter: Any) -> np.ndarray | None:
    """The weight of each fitted member (`estimators_`), or None when they weigh the same."""
    if voter.weights is None:
        return None
    named = zip(voter.estimators, voter.weights, strict=True)
    return np.asarray([w for (_, member), w in named if member != "drop"], dtype=np.float64)


def vote_shares(model: Any, x: Any) -> np.ndarray | None:
    """Hard voting's native scores [N, classes]: each class's share of the weighted votes of the
    members' own `predict`, the values its ONNX graph outputs as `probabilities` (its label is
    the first class with the largest share, as in scikit-learn's `predict`). None unless the
    model's prediction is a hard VotingClassifier's (scikit-learn gives it no predict_proba)."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline) and model.steps:
        last = model.steps[-1][1]
        if not _is_hard(last):
            return None
        return vote_shares(last, model[:-1].transform(x) if len(model.steps) > 1 else x)
    if not isinstance(model, VotingClassifier) or model.voting != "hard":
        return None
    picks = np.asarray(model.transform(x))  # hard voting: [N, members] class indices
    weights = member_weights(model)
    if weights is None:
        weights = np.ones(picks.shape[1])
    shares = np.zeros((picks.shape[0], len(model.classes_)))
    for member, weight in enumerate(weights):
        shares[np.arange(len(picks)), picks[:, member]] += weight
    return shares / weights.sum()


def _is_hard(model: Any) -> bool:
    from sklearn.ensemble import VotingClassifier
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline) and model.steps:
        return _is_hard(model.steps[-1][1])
    return isinstance(model, VotingClassifier) and model.voting == "hard"
