"""The operator's only door to the Kubernetes API (models, their status, InferenceServices,
Events). Everything else works on plain dicts and dataclasses."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from serin.operator.cache import Cache
from serin.operator.feedback_secret import SecretCheck, SecretState, classify, secret_body
from serin.operator.observations import JobObservation
from serin.operator.routing.base import GROUP as KSERVE_GROUP
from serin.operator.routing.base import PLURAL as KSERVE_PLURAL
from serin.operator.routing.base import VERSION as KSERVE_VERSION
from serin.operator.routing.base import Op, Write, feedback_secret_name, feedback_sender_secret_name
from serin.operator.routing.standard import ISVC_LABEL

GROUP, VERSION, PLURAL = "serin.dev", "v1alpha1", "models"
MERGE = "application/merge-patch+json"  # custom resources take no strategic merge patch
JSON_PATCH = "application/json-patch+json"
GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTES = "gateway.networking.k8s.io", "v1", "httproutes"


class Conflict(Exception):
    """The object changed since it was read: re-read and decide again."""


def _patch_not_applied(err: ApiException) -> bool:
    try:
        body = json.loads(err.body or "{}")
    except (TypeError, ValueError):
        return False
    return bool(isinstance(body, dict) and body.get("reason") == "Invalid"
                and not (body.get("details") or {}).get("causes"))


class Kube:
    """Reads come from the watch cache when one is given (the operator), else from the apiserver
    (the CLI, tests); every write's response goes into the cache."""

    def __init__(self, api: client.ApiClient, component: str = "serin-operator", cache: Cache | None = None) -> None:
        self.api = api
        self.cache = cache
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)
        self.component = component
        self.instance = f"{component}-{uuid.uuid4().hex[:8]}"
        self._feedback_secrets: set[tuple[str, str]] = set()  # (namespace, Model uid) known to have one

    async def get_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.cache is not None:
            cached = self.cache.model(namespace, name)
            if cached is not None:
                return cached
        return await self.refresh_model(namespace, name)

    async def refresh_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Model as the apiserver has it now (after a Conflict: the cache was behind)."""
        try:
            model: dict[str, Any] = await self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                                    name)
        except ApiException as err:
            if err.status == 404:
                if self.cache is not None:
                    self.cache.forget_model(namespace, name)
                return None
            raise
        if self.cache is not None:
            self.cache.put_model(model)
        return model

    async def patch_model_status(self, model: dict[str, Any], status: dict[str, Any]) -> None:
        meta = model["metadata"]
        # resourceVersion makes this a compare-and-swap: two writers can never interleave.
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]},
                "status": merge_patch(model.get("status") or {}, status)}
        try:
            written = await self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body, _content_type=MERGE)  # type: ignore[call-arg]  # passed through **kwargs; the stubs omit it
        except ApiException as err:
            if err.status == 409:
                raise Conflict(meta["name"]) from err
            raise
        if self.cache is not None:
            self.cache.put_model(written)

    async def remove_annotation(self, model: dict[str, Any], key: str, value: str = "") -> None:
        """Removes annotation `key`; with `value`, only while it still holds that value (a JSON
        patch whose test fails changes nothing: a command written since is kept for next time)."""
        meta = model["metadata"]
        body: Any = {"metadata": {"annotations": {key: None}}}
        content = MERGE
        if value:
            path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
            body, content = [{"op": "test", "path": path, "value": value}, {"op": "remove", "path": path}], JSON_PATCH
        try:
            written = await self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body, _content_type=content)  # type: ignore[call-arg]  # passed through **kwargs; the stubs omit it
        except ApiException as err:
            # The test failed (it holds another value now, or none): the apiserver answers 422 Invalid
            # with no causes ("the server rejected our request due to an error in our request"),
            # where a schema's refusal names its fields in details.causes; that one is raised.
            if value and err.status == 422 and _patch_not_applied(err):
                return
            raise
        if self.cache is not None:
            self.cache.put_model(written)

    async def get_isvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.cache is not None:
            return await self.cache.get("isvc", namespace, name)
        try:
            return await self.custom.get_namespaced_custom_object(
                KSERVE_GROUP, KSERVE_VERSION, namespace, KSERVE_PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    async def isvc_deployments(self, namespace: str, isvc: str) -> tuple[dict[str, Any], ...]:
        """The Deployments KServe made for one InferenceService (by its label)."""
        if self.cache is not None:
            return await self.cache.by_label("deployments", namespace, isvc)
        deps = await self.apps.list_namespaced_deployment(namespace, label_selector=f"{ISVC_LABEL}={isvc}")
        return tuple(self.api.sanitize_for_serialization(d) for d in deps.items)

    async def isvc_endpointslices(self, namespace: str, isvc: str) -> tuple[dict[str, Any], ...]:
        """The EndpointSlices of one InferenceService's Services (KServe's label, copied from them)."""
        if self.cache is not None:
            return await self.cache.by_label("endpointslices", namespace, isvc)
        slices = await self.discovery.list_namespaced_endpoint_slice(namespace, label_selector=f"{ISVC_LABEL}={isvc}")
        return tuple(self.api.sanitize_for_serialization(s) for s in slices.items)

    async def isvc_pods(self, namespace: str, isvc: str) -> tuple[dict[str, Any], ...]:
        """The Pods KServe made for one InferenceService (by its label), in either mode."""
        if self.cache is not None:
            return await self.cache.by_label("pods", namespace, isvc)
        pods = await self.core.list_namespaced_pod(namespace, label_selector=f"{ISVC_LABEL}={isvc}")
        return tuple(self.api.sanitize_for_serialization(p) for p in pods.items)

    async def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.cache is not None:
            return await self.cache.get("service", namespace, name)
        try:
            svc = await self.core.read_namespaced_service(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return dict(self.api.sanitize_for_serialization(svc))

    async def get_route(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.cache is not None:
            return await self.cache.get("route", namespace, name)
        try:
            return await self.custom.get_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, namespace,
                                                                  HTTPROUTES, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            cm = await self.core.read_namespaced_config_map(name, namespace)
        except ApiException as err:
            if err.status in (403, 404):
                return None
            raise
        return dict(self.api.sanitize_for_serialization(cm))

    async def get_retrain_job(self, namespace: str, name: str) -> JobObservation:
        """A retraining Job (retrain.py): whether it exists, and how it ended."""
        try:
            job = await self.batch.read_namespaced_job(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return JobObservation(exists=False)
            raise
        conditions = {c.type: c for c in (job.status.conditions if job.status else None) or [] if c.status == "True"}
        failed = conditions.get("Failed")
        return JobObservation(exists=True, succeeded="Complete" in conditions, failed=failed is not None,
                              reason=f"{failed.reason}: {failed.message}" if failed is not None else "")

    async def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        """Creates a Job; False when one of its name exists already (a create repeated after a kill)."""
        try:
            await self.batch.create_namespaced_job(namespace, body)  # type: ignore[arg-type]  # a dict body is sent as it is
        except ApiException as err:
            if err.status == 409:
                return False
            raise
        return True

    async def read_secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's data, decoded; None when absent or not readable (the chart lets the operator
        get one Secret by name per namespace: spec.NOTIFY_SECRET)."""
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as err:
            if err.status in (403, 404):
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    async def ensure_feedback_secret(self, model: dict[str, Any], owner: dict[str, Any],
                                     verify: bool = True) -> SecretCheck:
        """The Model's feedback key and sender token (routing.base.feedback_secret_name and
        feedback_sender_secret_name): each created once with a random value, owned by the Model,
        never changed by the operator (the predictors read both; a sender, the token). A Model served
        before sender tokens existed gets its token Secret at its next write that starts predictors.
        `verify` (before the Model's first deployment): a Secret of that name that is already there
        is used only when its owner is this Model, by uid (feedback_secret.py says why); without it
        (the Model serves, so its first deployment made or checked the Secret) one that is there is
        taken as the Model's. Checked once per Model per operator process; an answer of the
        apiserver's that stops it (403, 400, 422) is returned, not raised: the caller tells it and
        asks again later."""
        meta = model["metadata"]
        ns, uid = meta["namespace"], meta.get("uid", "")
        if (ns, uid) in self._feedback_secrets:
            return SecretCheck(SecretState.OURS, f"{ns}/{feedback_secret_name(meta['name'])}", model_uid=uid)
        # The signing key, then the sender token (a Secret of its own, so that a sender reading it
        # cannot read the key): each created, or found and checked, the same way.
        for sender in (False, True):
            check = await self._ensure_secret(model, owner, verify, sender)
            if not check.usable:
                return check
        self._feedback_secrets.add((ns, uid))
        return check

    async def _ensure_secret(self, model: dict[str, Any], owner: dict[str, Any], verify: bool,
                             sender: bool) -> SecretCheck:
        meta = model["metadata"]
        ns, uid = meta["namespace"], meta.get("uid", "")
        name = feedback_sender_secret_name(meta["name"]) if sender else feedback_secret_name(meta["name"])
        where = f"{ns}/{name}"
        body = secret_body(meta, owner, sender)
        for _ in range(2):  # a second create when the Secret found went before it could be read
            try:
                await self.core.create_namespaced_secret(ns, body)  # type: ignore[arg-type]  # a dict body is sent as it is
                check = SecretCheck(SecretState.OURS, where, model_uid=uid)
            except ApiException as err:
                if err.status == 403:
                    return SecretCheck(SecretState.FORBIDDEN, where, api_message(err), uid)
                if err.status in (400, 422):
                    return SecretCheck(SecretState.REFUSED, where, api_message(err), uid)
                if err.status != 409:
                    raise
                check = (await self._owner_of_secret(ns, name, model) if verify
                         else SecretCheck(SecretState.OURS, where, model_uid=uid))
            if check.state != SecretState.GONE:
                break
        return check

    async def _owner_of_secret(self, ns: str, name: str, model: dict[str, Any]) -> SecretCheck:
        """Whose the existing Secret is, by its owner references, when the operator may read it
        (the chart does not let it read Secrets: UNVERIFIED, and the caller waits for the Secret to
        go). A read returns the key too: only the owner references are kept."""
        where = f"{ns}/{name}"
        try:
            found = await self.core.read_namespaced_secret(name, ns)
        except ApiException as err:
            if err.status == 403:
                return SecretCheck(SecretState.UNVERIFIED, where, api_message(err), model["metadata"].get("uid", ""))
            if err.status == 404:  # deleted in between (the garbage collector)
                return SecretCheck(SecretState.GONE, where, "deleted while it was checked",
                                   model["metadata"].get("uid", ""))
            raise
        refs = (found.metadata.owner_references or []) if found.metadata is not None else []
        owners = [{"apiVersion": r.api_version, "kind": r.kind, "name": r.name, "uid": r.uid} for r in refs]
        del found
        return classify(where, owners, model["metadata"])

    async def write(self, namespace: str, w: Write) -> None:
        """A router's write. A create that finds the object already there is a Conflict: the
        next tick reads it and plans again."""
        try:
            if w.kind == "service":
                written = await self._write_service(namespace, w)
                if self.cache is not None and w.op != Op.DELETE:
                    self.cache.put("service", self.api.sanitize_for_serialization(written))
                return
            if w.kind == "isvc":
                group, version, plural = KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL
            elif w.kind == "httproute":
                group, version, plural = GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTES
            else:
                raise ValueError(f"unknown kind {w.kind!r}")
            if w.op == Op.CREATE:
                written = await self.custom.create_namespaced_custom_object(group, version, namespace, plural, w.body)
            elif w.op == Op.PATCH:
                written = await self.custom.patch_namespaced_custom_object(
                    group, version, namespace, plural, w.name, w.body, _content_type=MERGE)  # type: ignore[call-arg]  # passed through **kwargs; the stubs omit it
            else:
                await self.custom.delete_namespaced_custom_object(group, version, namespace, plural, w.name)
                written = None
            if self.cache is not None and written:
                self.cache.put("isvc" if w.kind == "isvc" else "route", written)
        except ApiException as err:
            if err.status == 409:
                raise Conflict(w.name) from err
            raise

    async def _write_service(self, namespace: str, w: Write) -> Any:
        if w.op == Op.CREATE:
            return await self.core.create_namespaced_service(namespace, w.body)  # type: ignore[arg-type]  # a dict body is sent as it is
        if w.op == Op.PATCH:
            return await self.core.patch_namespaced_service(w.name, namespace, w.body)
        return await self.core.delete_namespaced_service(w.name, namespace)

    async def event(self, model: dict[str, Any], type_: str, reason: str, message: str, name: str = "") -> None:
        """Post an Event. With a `name` (monitoring.event_name) a second post of the same Event is
        refused by the apiserver as a duplicate, which is what exactly-once telling needs."""
        meta = model["metadata"]
        now = dt.datetime.now(dt.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(namespace=meta["namespace"], name=name or None,
                                         generate_name=None if name else f"{meta['name']}."),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind="Model", name=meta["name"],
                namespace=meta["namespace"], uid=meta["uid"], resource_version=meta.get("resourceVersion")),
            type=type_, reason=reason, message=message[:1024],
            first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component=self.component),
            reporting_component=f"serin.dev/{self.component}", reporting_instance=self.instance,
            action=reason,
        )
        try:
            await self.core.create_namespaced_event(meta["namespace"], body)
        except ApiException as err:
            if not (name and err.status == 409):
                raise


def api_message(err: ApiException) -> str:
    """The apiserver's own words in a refusal (its Status message: which verb RBAC denied, which
    field was invalid), else the HTTP reason."""
    try:
        return str(json.loads(err.body or b"{}").get("message") or err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`. A key missing from `new` must be
    sent as null to be removed: a merge patch of `new` alone would leave it in place (say, a
    pending conversion's `retryAt` after the retry started)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    return patch


def owner_reference(model: dict[str, Any]) -> dict[str, Any]:
    meta = model["metadata"]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Model", "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}
