"""The operator's only door to the Kubernetes API (models, their status, InferenceServices,
Events). Everything else works on plain dicts and dataclasses."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from serin.operator import kserve

GROUP, VERSION, PLURAL = "serin.dev", "v1alpha1", "models"
MERGE = "application/merge-patch+json"  # custom resources take no strategic merge patch


class Conflict(Exception):
    """The object changed since it was read: re-read and decide again."""


class Kube:
    def __init__(self, api: client.ApiClient, component: str = "serin-operator") -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.component = component
        self.instance = f"{component}-{uuid.uuid4().hex[:8]}"

    async def get_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    async def patch_model_status(self, model: dict[str, Any], status: dict[str, Any]) -> None:
        meta = model["metadata"]
        # resourceVersion makes this a compare-and-swap: two writers can never interleave.
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]},
                "status": merge_patch(model.get("status") or {}, status)}
        try:
            await self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body, _content_type=MERGE)  # type: ignore[call-arg]  # passed through **kwargs; the stubs omit it
        except ApiException as err:
            if err.status == 409:
                raise Conflict(meta["name"]) from err
            raise

    async def remove_annotation(self, model: dict[str, Any], key: str) -> None:
        meta = model["metadata"]
        body = {"metadata": {"annotations": {key: None}}}
        await self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body, _content_type=MERGE)  # type: ignore[call-arg]  # passed through **kwargs; the stubs omit it

    async def get_isvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.custom.get_namespaced_custom_object(
                kserve.GROUP, kserve.VERSION, namespace, kserve.PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    async def create_isvc(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        try:
            await self.custom.create_namespaced_custom_object(
                kserve.GROUP, kserve.VERSION, meta["namespace"], kserve.PLURAL, body)
        except ApiException as err:
            if err.status == 409:
                raise Conflict(meta["name"]) from err
            raise

    async def patch_isvc(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        await self.custom.patch_namespaced_custom_object(
            kserve.GROUP, kserve.VERSION, namespace, kserve.PLURAL, name, patch, _content_type=MERGE)  # type: ignore[call-arg]  # passed through **kwargs; the stubs omit it

    async def event(self, model: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = model["metadata"]
        now = dt.datetime.now(dt.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind="Model", name=meta["name"],
                namespace=meta["namespace"], uid=meta["uid"], resource_version=meta.get("resourceVersion")),
            type=type_, reason=reason, message=message[:1024],
            first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component=self.component),
            reporting_component=f"serin.dev/{self.component}", reporting_instance=self.instance,
            action=reason,
        )
        await self.core.create_namespaced_event(meta["namespace"], body)


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
