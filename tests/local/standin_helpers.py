"""Helpers for the KServe stand-in tests: reading and waiting on InferenceServices through
kubectl, the stand-in process handle, tiny ONNX model directories."""


from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serin.local.controlplane import ControlPlane


@dataclass
class Isvcs:
    cp: ControlPlane
    namespace: str

    def create(self, name: str, uri: str, **predictor: Any) -> None:
        body = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"predictor": {"minReplicas": 1, "maxReplicas": 1, **predictor, "model": {
                    "modelFormat": {"name": "onnx"}, "runtime": "serin-onnx", "storageUri": uri,
                    "protocolVersion": "v2"}}}}
        self.cp.kubectl("apply", "-f", "-", input=json.dumps(body))

    def patch(self, name: str, predictor: dict[str, Any]) -> None:
        """A merge patch of spec.predictor, as the operator writes it (None removes a field)."""
        self.cp.kubectl("patch", "isvc", name, "-n", self.namespace, "--type=merge",
                        "-p", json.dumps({"spec": {"predictor": predictor}}))

    def get(self, name: str) -> dict[str, Any]:
        out = self.cp.kubectl("get", "isvc", name, "-n", self.namespace, "-o", "json")
        obj: dict[str, Any] = json.loads(out.stdout)
        return obj

    def wait(self, name: str, cond: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
        """Polls until `cond(isvc)` holds; fails with the last object seen."""
        deadline = time.monotonic() + timeout
        obj = self.get(name)
        while not _holds(cond, obj):
            if time.monotonic() > deadline:
                pytest.fail(f"condition not met within {timeout}s; last status:\n"
                            f"{json.dumps(obj.get('status'), indent=1)}")
            time.sleep(0.1)
            obj = self.get(name)
        return obj


def _holds(cond: Callable[[dict[str, Any]], bool], obj: dict[str, Any]) -> bool:
    try:
        return bool(cond(obj))
    except (KeyError, IndexError, TypeError):
        return False


def traffic(obj: dict[str, Any]) -> list[tuple[str, bool, int, str]]:
    return [(t["revisionName"], t["latestRevision"], t["percent"], t.get("tag", ""))
            for t in obj["status"]["components"]["predictor"]["traffic"]]


def settled(obj: dict[str, Any]) -> bool:
    return obj["status"].get("observedGeneration") == obj["metadata"]["generation"]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)



@dataclass
class StandIn:
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def write_model(directory: Path, weight: float) -> str:
    """A servable model directory: y = x · [w, w, w, w] over a float32 [N, 4] input named `input`."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((4, 1), weight, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["output"])], "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 1])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    return f"file://{directory}"
