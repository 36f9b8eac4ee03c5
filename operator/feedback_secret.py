"""Whose the Model's feedback Secret is, and what the operator does about it.

Each Model's predictors sign prediction ids with one key, kept in a Secret named after the Model
(routing.base.feedback_secret_name) and owned by it. A Secret of that name may already exist when
the operator comes to create it: its own, made before a restart; one left by an earlier Model of
the same name, deleted and recreated at once, which the garbage collector is about to delete (its
owner's uid is gone); or one the Model does not own at all. Only the first may be used: predictors
reading another's key would verify feedback for predictions this Model never made, and would
lose their key when the garbage collector comes.

The chart lets the operator create Secrets, not read them (a read would return every Secret's
data in the namespaces it watches). So before a Model's first deployment only a Secret the
operator has just created is known to be the Model's; one that is already there holds the first
deployment until it goes (the garbage collector deletes an earlier Model's within seconds) and
the next create succeeds. Given get on Secrets, the operator tells whose it is by its owner
references: the Model's own is used at once (after an operator restart between the Secret and
the first InferenceService), an earlier Model's or anyone else's is reported as such.

Pure: kube.py makes the calls and `classify`s what it read; reconcile.py acts on the result
(serve, or hold the first deployment) and tells it in status and in an Event.
"""

from __future__ import annotations

import base64
import enum
import secrets
from dataclasses import dataclass
from typing import Any

from serin.operator.names import bounded
from serin.operator.routing.base import (
    FEEDBACK_SECRET_KEY,
    FEEDBACK_SECRET_TOKEN,
    feedback_secret_name,
    feedback_sender_secret_name,
)


def secret_body(model_meta: dict[str, Any], owner: dict[str, Any], sender: bool = False) -> dict[str, Any]:
    """One of the Model's two feedback Secrets as the operator creates it, with a new random value:
    the key that signs prediction ids (`{model}-serin-feedback`), or with `sender` the token a
    feedback sender must show (`{model}-serin-feedback-sender`): apart, so that whoever may read the
    token (the labelling pipeline) cannot read the key and mint ids. Opaque, Serin's labels, owned
    by the Model: the chart's admission policy accepts exactly these shapes from the operator."""
    model = model_meta["name"]
    name = feedback_sender_secret_name(model) if sender else feedback_secret_name(model)
    values = {FEEDBACK_SECRET_TOKEN if sender else FEEDBACK_SECRET_KEY: secrets.token_hex(32)}
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": model_meta["namespace"],
                     "labels": {"app.kubernetes.io/managed-by": "serin", "serin.dev/model": bounded(model)},
                     "ownerReferences": [owner]},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


class SecretState(enum.StrEnum):
    OURS = "Ours"  # created now, or owned by this Model's uid: used
    FORBIDDEN = "Forbidden"  # the operator may not create it: predictors sign with keys of their own
    REFUSED = "Refused"  # the apiserver refused it (400/422): as FORBIDDEN
    UNVERIFIED = "Unverified"  # it exists and the operator may not read it to tell whose it is
    EARLIER = "Earlier"  # owned by an earlier Model of this name: being garbage collected
    FOREIGN = "Foreign"  # owned by something else, or by nothing: someone else's
    GONE = "Gone"  # there at the create, deleted before the read: created at the next check


# How soon a Secret that is not usable is checked again: one being garbage collected goes within
# seconds; a refusal (RBAC, a Secret someone must delete) waits for a person.
RETRY_SOON = 5.0
RETRY_LATER = 60.0


@dataclass(frozen=True)
class SecretCheck:
    state: SecretState
    secret: str  # namespace/name
    detail: str = ""  # the apiserver's words, or the owners found
    model_uid: str = ""  # the Model this was checked for

    @property
    def usable(self) -> bool:
        return self.state == SecretState.OURS

    @property
    def retry_seconds(self) -> float:
        # An unreadable Secret is most often an earlier Model's, about to be collected.
        soon = (SecretState.EARLIER, SecretState.GONE, SecretState.UNVERIFIED)
        return RETRY_SOON if self.state in soon else RETRY_LATER

    @property
    def holds_first_deployment(self) -> bool:
        """A Secret that exists and is not (known to be) this Model's: no predictor of the Model may
        start before it is gone or known. Without a Secret at all (FORBIDDEN, REFUSED) predictors
        serve, each with a key of its own, as routing.base.model_spec's optional secretKeyRef allows."""
        return self.state in (SecretState.UNVERIFIED, SecretState.EARLIER, SecretState.FOREIGN, SecretState.GONE)

    def describe(self) -> str:
        """For status.message and the Warning Event: which Secret, what is wrong, what happens now."""
        s, retried = self.secret, f"checked again every {self.retry_seconds:g}s"
        if self.state == SecretState.OURS:
            return ""
        # Without the key, ids verify on one replica only; without the sender token, no feedback is taken.
        without = ("its predictors sign ids with keys of their own, valid on one replica only"
                   if not s.endswith("-sender") else "its predictors refuse all feedback (no sender token)")
        if self.state == SecretState.FORBIDDEN:
            return (f"the operator may not create Secret {s}, one of the Model's feedback Secrets ({self.detail}): "
                    f"{without}; {retried}")
        if self.state == SecretState.REFUSED:
            return (f"the apiserver refused Secret {s}, one of the Model's feedback Secrets ({self.detail}): "
                    f"{without}; {retried}")
        if self.state == SecretState.UNVERIFIED:
            return (f"a Secret {s} exists and the operator may not read Secret {s} to check that it is this "
                    f"Model's ({self.detail}): the first deployment waits for it to go (an earlier Model's is "
                    f"deleted by the garbage collector within seconds); if it stays, delete it; {retried}")
        if self.state in (SecretState.EARLIER, SecretState.GONE):
            return (f"Secret {s} belongs to an earlier Model of this name ({self.detail}): the first deployment "
                    f"waits for the garbage collector to delete it, {retried}")
        return (f"Secret {s} exists and is not this Model's ({self.detail}): Serin does not take over a Secret it "
                f"did not create; delete it, or name the Model otherwise; the first deployment waits, {retried}")


def classify(secret: str, owners: list[dict[str, Any]], model: dict[str, Any]) -> SecretCheck:
    """An existing Secret `secret` (namespace/name) with `owners` (its ownerReferences, as the API
    spells them) seen from `model` (its metadata)."""
    uid, name = str(model.get("uid", "")), str(model.get("name", ""))
    models = [r for r in owners if r.get("kind") == "Model" and str(r.get("apiVersion", "")).startswith("serin.dev/")]
    if any(r.get("uid") == uid for r in models):
        return SecretCheck(SecretState.OURS, secret, model_uid=uid)
    earlier = [r for r in models if r.get("name") == name]
    if earlier:
        return SecretCheck(SecretState.EARLIER, secret, f"uid {earlier[0].get('uid')}", uid)
    found = ", ".join(f"{r.get('kind')} {r.get('name')} (uid {r.get('uid')})" for r in owners) or "no owner"
    return SecretCheck(SecretState.FOREIGN, secret, found, uid)
