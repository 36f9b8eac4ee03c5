"""The `job` conversion executor: a Kubernetes Job per version, with the converter image.

The Pod gets no API credentials (automountServiceAccountToken: false and a ServiceAccount with no
bindings), runs non-root with a read-only root filesystem, has resource limits and a deadline.
Its three steps (job_body) end with the trusted publish step writing the converted model to the
Model's own directory of the model store and the report summary to its termination message,
which this executor reads back from the Pod's status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from serin.operator import pods as pods_
from serin.operator.executors.base import REQUEST_ENV, ConversionRequest, result_from_summary
from serin.operator.kube import api_message
from serin.operator.names import bounded
from serin.operator.observations import ConversionResult, ConversionState
from serin.operator.spec import S3Source

STORE_MOUNT = "/mnt/serin-store"
SLUG_ANNOTATION = "serin.dev/conversion"
CONVERTER_SELECTOR = "app.kubernetes.io/name=serin-converter,app.kubernetes.io/managed-by=serin"
WORK_MOUNT = "/work"  # the converter's WORK_DIR: input/ and output/, one emptyDir each
SOURCE_MOUNT = "/mnt/pvc"  # the converter's PVC_MOUNT: pvc://CLAIM/path is read at SOURCE_MOUNT/CLAIM/path


@dataclass(frozen=True)
class JobSettings:
    image: str
    service_account: str = "serin-converter"
    # pvc://CLAIM[/prefix] or s3://BUCKET[/prefix]: where converted models are written and KServe
    # reads them from.
    model_store: str = "pvc://serin-models"
    cpu: str = "2"
    memory: str = "4Gi"
    # The S3 store's settings and the Secret holding its keys in each namespace with Models (its
    # secretName), given to the publish step alone.
    store_s3: S3Source = field(default_factory=lambda: S3Source(secretName=STORE_SECRET))

    @property
    def s3_store(self) -> bool:
        return self.model_store.startswith("s3://")


STORE_SECRET = "serin-model-store"


def parse_store_s3(raw: str) -> S3Source:
    """SERIN_MODEL_STORE_S3 (the chart's conversion.modelStoreS3 as JSON): endpoint, region,
    addressing, verifyTls, secretName."""
    doc = json.loads(raw) if raw.strip() else {}
    if not isinstance(doc, dict):
        raise ValueError("SERIN_MODEL_STORE_S3 must be a JSON object")
    unknown = set(doc) - {"endpoint", "region", "addressing", "verifyTls", "secretName"}
    if unknown:
        raise ValueError(f"SERIN_MODEL_STORE_S3 has unknown fields: {', '.join(sorted(unknown))}")
    if doc.get("addressing") not in (None, "", "path", "virtual"):
        raise ValueError(f"SERIN_MODEL_STORE_S3 addressing must be path or virtual, not {doc['addressing']!r}")
    return S3Source(endpoint=doc.get("endpoint") or None, region=doc.get("region") or None,
                    addressing=doc.get("addressing") or None, verifyTls=bool(doc.get("verifyTls", True)),
                    secretName=doc.get("secretName") or STORE_SECRET)


def _store(settings: JobSettings) -> tuple[str, str]:
    """(claim or bucket, prefix) of the store."""
    rest = settings.model_store.removeprefix("pvc://").removeprefix("s3://")
    root, _, prefix = rest.partition("/")
    return root, prefix.strip("/")


def job_name(req: ConversionRequest) -> str:
    """Unique per (Model, generation, version, attempt) in the namespace, and a valid label value
    (its Pods' job-name label): cut with a hash of the whole name when it is longer than 63."""
    return bounded(f"serin-convert-{req.slug}-a{req.attempt}")


def store_path(req: ConversionRequest, settings: JobSettings) -> str:
    """The Model version's directory inside the store claim (the publish step's subPath)."""
    _, prefix = _store(settings)
    return "/".join(p for p in (prefix, req.namespace, req.slug) if p)


def storage_uri(req: ConversionRequest, settings: JobSettings) -> str:
    """The version's place: the same layout in a claim and in a bucket ({prefix}/{namespace}/{slug},
    a slug per attempt), so that no version, nor a retry of one, writes where another did."""
    root, _ = _store(settings)
    return f"{'s3' if settings.s3_store else 'pvc'}://{root}/{store_path(req, settings)}"


def source_claims(req: ConversionRequest) -> list[str]:
    """The claims the artifact and the sample are read from (pvc:// URIs), each mounted once."""
    claims = [uri.removeprefix("pvc://").partition("/")[0] for uri in (req.source.uri, req.source.sampleUri)
              if uri.startswith("pvc://")]
    return list(dict.fromkeys(c for c in claims if c))


def job_body(req: ConversionRequest, settings: JobSettings) -> dict[str, Any]:
    """One Pod, three steps (serin.converters.job): `fetch` and `publish` are trusted and never run
    the artifact's code; `convert` runs it, with no network (it takes it away from itself before
    loading anything), no credentials, no source claim and no store: it reads what fetch copied
    and writes a scratch directory that publish checks and copies to the Model's own directory of
    the store, the only part of the store the Pod mounts."""
    claim, _ = _store(settings)
    sources = source_claims(req)
    deadline = int(req.conversion.timeout.seconds)
    labels = {"app.kubernetes.io/name": "serin-converter", "app.kubernetes.io/managed-by": "serin",
              "serin.dev/model": bounded(req.name), "serin.dev/generation": str(req.generation)}
    # An S3 store: the publish step writes the version's place itself, with the keys of the
    # namespace's store Secret; no claim of the store is mounted anywhere.
    request = req.document(storage_uri(req, settings), settings.store_s3) if settings.s3_store \
        else req.document(STORE_MOUNT)

    def step(name: str, mounts: list[dict[str, Any]]) -> dict[str, Any]:
        # `-P` and workingDir `/`: nothing writable is ever on the import path. With `-m` Python
        # would put the working directory first, and a directory the convert step could write
        # (its /tmp, were it shared) would let the artifact's code run inside the trusted steps.
        return {
            "name": name,
            "image": settings.image,
            "command": ["python", "-P", "-m", "serin.converters.job", name],
            "workingDir": "/",
            "env": [{"name": REQUEST_ENV, "value": request}, {"name": "SERIN_WORK_DIR", "value": WORK_MOUNT}],
            "terminationMessagePolicy": "File",
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                          "limits": {"cpu": settings.cpu, "memory": settings.memory}},
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
            # The untrusted step's /tmp is its own: nothing it leaves there reaches fetch or publish.
            "volumeMounts": [{"name": "convert-tmp" if name == "convert" else "tmp", "mountPath": "/tmp"}, *mounts],
        }

    def work(part: str, read_only: bool) -> dict[str, Any]:
        return {"name": part, "mountPath": f"{WORK_MOUNT}/{part}", "readOnly": read_only}

    fetch = step("fetch", [work("input", False),
                           *({"name": f"source-{i}", "mountPath": f"{SOURCE_MOUNT}/{c}", "readOnly": True}
                             for i, c in enumerate(sources))])
    # The S3 keys of the Secret the Model names (in its own namespace: a Model cannot name another
    # team's), to the fetch step alone; the step that unpickles never holds a key.
    fetch["env"] += req.source.s3.keys_env() if req.source.s3 is not None else []
    convert = step("convert", [work("input", True), work("output", False)])
    if settings.s3_store:
        publish = step("publish", [work("input", True), work("output", True)])
        publish["env"] += settings.store_s3.keys_env()
        store_volume = []
    else:
        publish = step("publish", [work("input", True), work("output", True),
                                   {"name": "store", "mountPath": STORE_MOUNT, "subPath": store_path(req, settings)}])
        store_volume = [{"name": "store", "persistentVolumeClaim": {"claimName": claim}}]
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": job_name(req), "namespace": req.namespace, "labels": labels,
            # The conversion queue counts running Jobs by the request they serve.
            "annotations": {SLUG_ANNOTATION: req.slug},
            "ownerReferences": [{"apiVersion": "serin.dev/v1alpha1", "kind": "Model", "name": req.name,
                                 "uid": req.uid, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "backoffLimit": 0,  # the operator decides about retries (attempts are in status)
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": settings.service_account,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "fsGroup": 65532,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "initContainers": [fetch, convert],
                    "containers": [publish],
                    "volumes": [*store_volume,
                                {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
                                {"name": "convert-tmp", "emptyDir": {"sizeLimit": "2Gi"}},
                                {"name": "input", "emptyDir": {"sizeLimit": "4Gi"}},
                                {"name": "output", "emptyDir": {"sizeLimit": "4Gi"}},
                                *({"name": f"source-{i}", "persistentVolumeClaim": {"claimName": c, "readOnly": True}}
                                  for i, c in enumerate(sources))],
                },
            },
        },
    }


def _terminated(cs: dict[str, Any]) -> dict[str, Any] | None:
    term = (cs.get("state") or {}).get("terminated")
    return term if isinstance(term, dict) else None


def result_from_pod(pod: dict[str, Any] | None, uri: str) -> ConversionResult | None:
    """The report summary from a finished Pod's termination messages, a failure when a container
    cannot start, or None while it runs. Only the last step (publish, trusted) can say a conversion
    passed: a step before it that failed says why, and what it says of passing is not believed."""
    if not pod:
        return None
    status = pod.get("status") or {}
    for init, cs in [*((True, c) for c in status.get("initContainerStatuses") or []),
                     *((False, c) for c in status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        # Without this a Job whose image is missing would look Running until its timeout (10 minutes).
        if waiting.get("reason") in pods_.CANNOT_START:
            said = " ".join(str(waiting.get("message") or cs.get("image", "")).split())[:300]
            # The kubelet cannot read spec.source.s3.secretName's Secret or one of its keys: said so.
            whose = (" (the Secret named by spec.source.s3.secretName)"
                     if cs.get("name") == "fetch" and waiting["reason"] == "CreateContainerConfigError"
                     and "secret" in said.lower() else "")
            # Retried like a fetch failure (a registry may be back, a Secret created, a minute
            # later), then final.
            return ConversionResult(
                ConversionState.FAILED, retryable=True,
                reason=f"the converter container cannot start: {waiting['reason']}: {said}{whose}")
        term = _terminated(cs)
        if term is None or (init and term.get("exitCode") == 0):
            continue
        try:
            summary = json.loads(term.get("message") or "")
        except ValueError:
            summary = None
        step = f"the {cs.get('name')} step" if init else "the converter"
        if not isinstance(summary, dict):
            reason = f"{step} exited with code {term.get('exitCode')} ({term.get('reason', 'no message')})"
            return ConversionResult(ConversionState.FAILED, reason=reason)
        if init:
            summary = {**summary, "passed": False}
        return result_from_summary(summary, uri)
    return None


# Answers to a create that no retry changes: invalid (a limit, a name), forbidden (RBAC, an
# admission policy), unprocessable (an admission policy's denial, a schema).
REFUSALS = frozenset({400, 403, 422})


def _finished(job: Any) -> bool:
    status = job.status
    if status is None:
        return False
    if any(c.type in ("Complete", "Failed") and c.status == "True" for c in status.conditions or []):
        return True
    return bool(status.succeeded or status.failed) and not status.active


class JobExecutor:
    def __init__(self, api: client.ApiClient, settings: JobSettings, namespaces: tuple[str, ...] = (),
                 poll_seconds: float = 2.0) -> None:
        self.api = api
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.settings = settings
        self.namespaces = namespaces  # () : all namespaces
        # (namespace, Job name) -> the apiserver's words, for a create it refused for good.
        self._refused: dict[tuple[str, str], str] = {}
        # A running Job is read every poll_seconds (2 requests): bounded by the conversion limit,
        # and nothing at all once no conversion runs.
        self._poll_seconds = poll_seconds

    @property
    def poll_seconds(self) -> float | None:
        return self._poll_seconds

    async def active(self) -> set[tuple[str, str]]:
        if self.namespaces:
            lists = [await self.batch.list_namespaced_job(ns, label_selector=CONVERTER_SELECTOR)
                     for ns in self.namespaces]
        else:
            lists = [await self.batch.list_job_for_all_namespaces(label_selector=CONVERTER_SELECTOR)]
        return {(job.metadata.namespace, (job.metadata.annotations or {}).get(SLUG_ANNOTATION, job.metadata.name))
                for jobs in lists for job in jobs.items if not _finished(job)}

    async def start(self, req: ConversionRequest) -> None:
        try:
            await self.batch.create_namespaced_job(req.namespace, job_body(req, self.settings))  # type: ignore[arg-type]  # dicts serialise as-is
        except ApiException as err:
            if err.status == 409:  # already created by an earlier tick or operator
                return
            if err.status in REFUSALS:
                # No attempt will be let through either: the next poll fails the conversion with
                # the apiserver's own words (an admission policy, RBAC, a quota), not "did not run".
                self._refused[(req.namespace, job_name(req))] = " ".join(api_message(err).split())[:600]
                return
            raise

    async def poll(self, req: ConversionRequest) -> ConversionResult:
        refused = self._refused.pop((req.namespace, job_name(req)), None)
        if refused is not None:
            return ConversionResult(ConversionState.FAILED, reason=f"the conversion Job was refused: {refused}")
        try:
            job = await self.batch.read_namespaced_job(job_name(req), req.namespace)
        except ApiException as err:
            if err.status == 404:
                return ConversionResult(ConversionState.MISSING)
            raise
        pods = await self.core.list_namespaced_pod(req.namespace, label_selector=f"job-name={job_name(req)}")
        uri = storage_uri(req, self.settings)
        found = [self.api.sanitize_for_serialization(pod) for pod in pods.items]
        for pod in found:
            result = result_from_pod(pod, uri)
            if result is not None:
                return result
        for cond in job.status.conditions or []:
            if cond.type == "Failed" and cond.status == "True":
                return ConversionResult(ConversionState.FAILED,
                                        reason=f"conversion Job failed: {cond.reason}: {cond.message}")
        # Running as far as the Job goes; its Pod may still wait for Kubernetes (a node with room).
        stuck = pods_.trouble(found)
        if stuck is not None:
            return ConversionResult(ConversionState.RUNNING, reason=stuck.describe(), blocked=stuck.reason)
        return ConversionResult(ConversionState.RUNNING)

    async def cancel(self, req: ConversionRequest) -> None:
        try:
            await self.batch.delete_namespaced_job(job_name(req), req.namespace, propagation_policy="Background")
        except ApiException as err:
            if err.status != 404:
                raise
