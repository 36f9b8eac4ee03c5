"""The Model's feedback Secret through whole reconcile ticks, against a fake Kubernetes API: what
happens when the operator may not create or read it, and when the Secret of that name is not this
Model's (left by an earlier Model of the same name, or someone else's).

The reconcile is the real one (observe, decide, persist, act); only the API client is fake: it
keeps objects in dicts, answers as the apiserver does (201, 409, 403, 404), and can be told which
calls RBAC forbids."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from clock import at
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from serin.operator.feedback_secret import RETRY_LATER, RETRY_SOON, secret_body
from serin.operator.kube import Kube
from serin.operator.observations import ConversionResult, ConversionState
from serin.operator.reconcile import Deps, reconcile
from serin.operator.spec import parse_spec
from serin.operator.status import Status, Version, status_to_dict

NS, NAME, UID = "ml", "fraud", "uid-now"
SECRET = f"{NAME}-serin-feedback"
SPEC = {"source": {"uri": "file:///m/v1.joblib", "sampleUri": "file:///s.csv"},
        "rollout": {"analysis": {"metrics": [{"name": "score", "query": "vector(1)", "min": 0.5}]}}}
STORE_URI = "pvc://serin-models/ml/fraud-g1-abc"


def forbidden(verb: str, resource: str) -> ApiException:
    err = ApiException(status=403, reason="Forbidden")
    err.body = json.dumps({"message": f'{resource} "{SECRET}" is forbidden: User "system:serviceaccount:serin:'
                                      f'serin-operator" cannot {verb} resource "{resource}" in API group "" in the '
                                      f'namespace "{NS}"'})
    return err


def api_error(status: int, reason: str) -> ApiException:
    err = ApiException(status=status, reason=reason)
    err.body = json.dumps({"message": reason})
    return err


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class FakeCustom:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, namespace, name)
        self.created: list[tuple[str, str]] = []

    async def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str,
                                           name: str) -> dict[str, Any]:
        obj = self.objects.get((plural, ns, name))
        if obj is None:
            raise api_error(404, "NotFound")
        return copy.deepcopy(obj)

    async def patch_namespaced_custom_object_status(self, group: str, version: str, ns: str, plural: str, name: str,
                                                    body: dict[str, Any], **_: Any) -> dict[str, Any]:
        obj = self.objects[(plural, ns, name)]
        merge(obj, {"status": body["status"]})
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(obj)

    async def patch_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str,
                                             body: dict[str, Any], **_: Any) -> dict[str, Any]:
        return merge(self.objects[(plural, ns, name)], body)

    async def create_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str,
                                              body: dict[str, Any]) -> dict[str, Any]:
        key = (plural, ns, body["metadata"]["name"])
        if key in self.objects:
            raise api_error(409, "AlreadyExists")
        self.objects[key] = copy.deepcopy(body)
        self.created.append((plural, body["metadata"]["name"]))
        return copy.deepcopy(body)


class FakeCore:
    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[client.CoreV1Event] = []
        self.forbid: set[str] = set()  # "create" / "get" on secrets
        self.secret_calls: list[str] = []

    async def create_namespaced_secret(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        self.secret_calls.append("create")
        if "create" in self.forbid:
            raise forbidden("create", "secrets")
        key = (ns, body["metadata"]["name"])
        if key in self.secrets:
            raise api_error(409, "AlreadyExists")
        self.secrets[key] = copy.deepcopy(body)
        return body

    async def read_namespaced_secret(self, name: str, ns: str) -> client.V1Secret:
        self.secret_calls.append("get")
        if "get" in self.forbid:
            raise forbidden("get", "secrets")
        found = self.secrets.get((ns, name))
        if found is None:
            raise api_error(404, "NotFound")
        meta = found["metadata"]
        refs = [client.V1OwnerReference(api_version=r["apiVersion"], kind=r["kind"], name=r["name"], uid=r["uid"])
                for r in meta.get("ownerReferences") or []]
        return client.V1Secret(metadata=client.V1ObjectMeta(name=name, namespace=ns, owner_references=refs or None),
                               data=found.get("data"))

    async def create_namespaced_event(self, ns: str, body: client.CoreV1Event) -> client.CoreV1Event:
        self.events.append(body)
        return body

    async def list_namespaced_pod(self, ns: str, **_: Any) -> client.V1PodList:
        return client.V1PodList(items=[])


class NoExecutor:
    poll_seconds = None

    async def start(self, req: Any) -> None: ...
    async def cancel(self, req: Any) -> None: ...
    async def active(self) -> set[tuple[str, str]]:
        return set()

    async def poll(self, req: Any) -> ConversionResult:
        return ConversionResult(ConversionState.MISSING)


class NoMetrics:
    async def measure(self, *_: Any) -> Any:
        raise AssertionError("nothing is measured in these tests")


class World:
    """The fake API, one Model converted and due to be deployed, and the operator's Deps."""

    def __init__(self) -> None:
        self.custom, self.core = FakeCustom(), FakeCore()
        key = parse_spec(SPEC).version_key
        status = Status(stable=Version(1, key, STORE_URI, "s" * 64), stableConfirmed=False)
        self.custom.objects[("models", NS, NAME)] = {
            "apiVersion": "serin.dev/v1alpha1", "kind": "Model",
            "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1, "resourceVersion": "1"},
            "spec": SPEC, "status": status_to_dict(status)}
        self.deps = self.restart()

    def restart(self) -> Deps:
        """A new operator process: nothing in memory, the same cluster."""
        kube = Kube(client.ApiClient())
        kube.custom, kube.core = self.custom, self.core  # type: ignore[assignment]
        self.deps = Deps(kube, NoExecutor(), NoMetrics())  # type: ignore[arg-type]
        return self.deps

    def leave_secret(self, owners: list[dict[str, str]]) -> None:
        self.core.secrets[(NS, SECRET)] = {"metadata": {"name": SECRET, "namespace": NS, "ownerReferences": owners},
                                           "data": {"key": "b2xkLWtleQ=="}}

    async def tick(self, seconds: float = 0) -> Any:
        return await reconcile(self.deps, NS, NAME, at(seconds))

    def model(self) -> dict[str, Any]:
        return self.custom.objects[("models", NS, NAME)]

    def isvc(self) -> dict[str, Any] | None:
        return self.custom.objects.get(("inferenceservices", NS, NAME))

    def warnings(self) -> list[str]:
        return [f"{e.reason}: {e.message}" for e in self.core.events if e.type == "Warning"]


EARLIER = {"apiVersion": "serin.dev/v1alpha1", "kind": "Model", "name": NAME, "uid": "uid-before"}


async def test_a_forbidden_create_ends_the_tick_with_a_clear_status_and_is_retried() -> None:
    """RBAC without create on Secrets: the tick ends (before: an UnboundLocalError), the Model is
    served anyway (its predictors sign ids with keys of their own, as designed), and status, a
    Warning Event and the log say which Secret the operator may not create; later ticks retry."""
    w = World()
    w.core.forbid = {"create"}
    done = await w.tick()
    assert done is not None
    assert w.isvc() is not None, "the Secret is optional: serving goes on without it"
    (warning,) = w.warnings()
    assert warning.startswith("FeedbackSecret: ") and f"may not create Secret {NS}/{SECRET}" in warning
    assert done.wake_after is not None and done.wake_after <= RETRY_LATER
    await w.tick(1)
    message = w.model()["status"]["message"]
    assert f"may not create Secret {NS}/{SECRET}" in message and "checked again every 60s" in message
    progressing = {c["type"]: c for c in w.model()["status"]["conditions"]}["Progressing"]
    assert f"Secret {NS}/{SECRET}" in progressing["message"]
    assert len(w.warnings()) == 1, "told once, not at every retry"
    w.core.forbid = set()  # the admin fixed RBAC
    await w.tick(2)
    assert (NS, SECRET) not in w.core.secrets, "not before it is due: no create per tick while RBAC refuses"
    await w.tick(1 + RETRY_LATER)
    await w.tick(2 + RETRY_LATER)
    assert (NS, SECRET) in w.core.secrets
    assert "Secret" not in w.model()["status"]["message"]


async def test_with_the_charts_rbac_a_secret_already_there_holds_the_first_deployment_until_it_goes() -> None:
    """The chart lets the operator create Secrets, not read them: a Secret found before the first
    deployment cannot be told to be this Model's, so no predictor is started to read it. The
    earlier Model's is deleted by the garbage collector; the next check creates the Model's own."""
    w = World()
    w.leave_secret([EARLIER])
    w.core.forbid = {"get"}
    done = await w.tick()
    assert done is not None and done.wake_after is not None and done.wake_after <= RETRY_SOON
    assert w.isvc() is None, "whose Secret it is cannot be told: the predictors must not read it"
    await w.tick(1)
    assert f"may not read Secret {NS}/{SECRET}" in w.model()["status"]["message"]
    del w.core.secrets[(NS, SECRET)]  # the garbage collector
    await w.tick(1 + RETRY_SOON)
    assert [r["uid"] for r in w.core.secrets[(NS, SECRET)]["metadata"]["ownerReferences"]] == [UID]
    assert w.isvc() is not None


async def test_a_secret_left_by_an_earlier_model_of_the_same_name_is_not_used() -> None:
    """Deleted and recreated at once: the old Model's Secret is still there, owned by the old uid,
    and the garbage collector will delete it. Adopting it gave the new Model's predictors a key
    that then vanished (and the old Model's key). The first deployment waits for it to go; then the
    Model gets a Secret of its own, owned by its own uid, and is deployed."""
    w = World()
    w.leave_secret([EARLIER])
    done = await w.tick()
    assert done is not None and w.isvc() is None
    assert w.core.secrets[(NS, SECRET)]["metadata"]["ownerReferences"] == [EARLIER], "never touched"
    assert done.wake_after is not None and done.wake_after <= RETRY_SOON
    await w.tick(1)
    message = w.model()["status"]["message"]
    assert f"Secret {NS}/{SECRET} belongs to an earlier Model of this name (uid uid-before)" in message
    del w.core.secrets[(NS, SECRET)]  # the garbage collector
    w.restart()  # and the operator restarted meanwhile: nothing it needs is in memory
    await w.tick(2)
    secret = w.core.secrets[(NS, SECRET)]
    assert [r["uid"] for r in secret["metadata"]["ownerReferences"]] == [UID]
    assert secret["data"]["key"] != "b2xkLWtleQ=="
    assert w.isvc() is not None
    await w.tick(3)
    assert "Secret" not in w.model()["status"]["message"]


async def test_a_secret_nobody_owns_is_not_taken_over() -> None:
    w = World()
    w.leave_secret([])
    await w.tick()
    await w.tick(1)
    assert w.isvc() is None
    assert f"Secret {NS}/{SECRET} exists and is not this Model's (no owner)" in w.model()["status"]["message"]


async def test_the_models_own_secret_is_recognised_after_a_restart() -> None:
    """Created by this Model before a restart: found again by its owner's uid, used as it is."""
    w = World()
    w.leave_secret([EARLIER | {"uid": UID}])
    await w.tick()
    assert w.isvc() is not None and w.warnings() == []
    assert w.core.secret_calls == ["create", "get", "create"]  # the key found and checked, the token made
    await w.tick(1)
    assert w.core.secret_calls == ["create", "get", "create"], "checked once per Model per process"


async def test_a_serving_models_secret_is_not_read_again_after_a_restart() -> None:
    """Its first deployment made or checked the Secret: after a restart the operator's create meets
    it (409) and takes it as the Model's, without a read the chart does not allow."""
    w = World()
    await w.tick()  # the first deployment: Secret and InferenceService
    assert w.isvc() is not None
    w.model()["status"]["stable"]["storageUri"] = "pvc://serin-models/ml/fraud-g1-other"  # asks for a patch
    w.core.forbid = {"get"}
    w.restart()
    w.core.secret_calls.clear()
    await w.tick(1)
    assert w.core.secret_calls == ["create", "create"] and w.warnings() == []
    assert w.isvc()["spec"]["predictor"]["model"]["storageUri"] == "pvc://serin-models/ml/fraud-g1-other"


@pytest.mark.parametrize("status", [400, 422])
async def test_a_secret_the_apiserver_refuses_is_said_not_raised(status: int) -> None:
    w = World()

    async def refuse(ns: str, body: dict[str, Any]) -> None:
        raise api_error(status, "Secret is invalid: metadata.name")

    w.core.create_namespaced_secret = refuse  # type: ignore[method-assign]
    assert await w.tick() is not None
    assert w.isvc() is not None
    assert any(f"Secret {NS}/{SECRET}" in m for m in w.warnings())


def test_the_signing_key_and_the_sender_token_are_random_and_in_secrets_of_their_own() -> None:
    # The key mints ids (what was predicted); the token only lets a sender tell truth about them:
    # the labelling pipeline given `get` on the token's Secret must not be able to read the key.
    owner = {"apiVersion": "serin.dev/v1alpha1", "kind": "Model", "name": "fraud", "uid": "u", "controller": True}
    keys = [secret_body({"name": "fraud", "namespace": "ml"}, owner) for _ in range(2)]
    tokens = [secret_body({"name": "fraud", "namespace": "ml"}, owner, sender=True) for _ in range(2)]
    assert [b["metadata"]["name"] for b in (*keys, *tokens)] == ["fraud-serin-feedback"] * 2 + [
        "fraud-serin-feedback-sender"] * 2
    assert all(set(b["data"]) == {"key"} for b in keys) and all(set(b["data"]) == {"token"} for b in tokens)
    values = [base64.b64decode(next(iter(b["data"].values()))).decode() for b in (*keys, *tokens)]
    assert len(set(values)) == 4 and all(len(v) == 64 for v in values)
    assert all(b["type"] == "Opaque" and b["metadata"]["ownerReferences"] == [owner] for b in (*keys, *tokens))


async def test_a_model_served_before_sender_tokens_gets_its_token_secret_at_its_next_deployment() -> None:
    """An operator upgraded under a serving Model: its key Secret is there (made by the older
    operator, not readable by this one), its token Secret is not. The write that restarts its
    predictors (the new variable) creates the token's Secret first, so they start with it."""
    w = World()
    await w.tick()
    assert w.isvc() is not None
    del w.core.secrets[(NS, f"{SECRET}-sender")]  # as an older operator left it
    w.model()["status"]["stable"]["storageUri"] = "pvc://serin-models/ml/fraud-g1-other"  # asks for a patch
    w.core.forbid = {"get"}
    w.restart()
    await w.tick(1)
    sender = w.core.secrets[(NS, f"{SECRET}-sender")]
    assert [r["uid"] for r in sender["metadata"]["ownerReferences"]] == [UID] and w.warnings() == []


async def test_a_token_secret_someone_else_made_holds_the_first_deployment() -> None:
    w = World()
    w.core.secrets[(NS, f"{SECRET}-sender")] = {"metadata": {"name": f"{SECRET}-sender", "namespace": NS,
                                                             "ownerReferences": []}, "data": {"token": "a25vd24="}}
    await w.tick()
    await w.tick(1)
    assert w.isvc() is None
    assert f"Secret {NS}/{SECRET}-sender exists and is not this Model's" in w.model()["status"]["message"]
