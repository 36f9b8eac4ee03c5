"""The conversion's proof that a model's rows are independent (profile.json `batching`), on
graphs built to fail it: the runtime batches requests only for models that pass."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper
from serin.converters import parity


def _graph(nodes: list, out_shape: list) -> bytes:  # type: ignore[type-arg]
    model = helper.make_model(
        helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
            [helper.make_tensor("axes", TensorProto.INT64, [1], [0])],
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    model.ir_version = 9
    return model.SerializeToString()


ROWS = {"x": np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)}


def test_row_wise_model_is_independent() -> None:
    proof = parity.batching(_graph([helper.make_node("Relu", ["x"], ["y"])], [None, 3]), ROWS)
    assert proof == {"rowsIndependent": True, "rows": 64, "maxAbsDiff": 0.0}


def test_model_mixing_rows_is_not() -> None:
    # y = x - mean over the batch: each answer depends on the other rows of its batch.
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
             helper.make_node("Sub", ["x", "m"], ["y"])]
    proof = parity.batching(_graph(nodes, [None, 3]), ROWS)
    assert proof["rowsIndependent"] is False
    assert proof["reason"].startswith("output 0 differs by up to"), proof


def test_output_without_a_row_per_input_row_is_not() -> None:
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)]
    proof = parity.batching(_graph(nodes, [3]), ROWS)
    assert proof["rowsIndependent"] is False
    assert proof["reason"] == "output 0 has shape [3], not one entry per row", proof


def test_small_sample_checks_every_row() -> None:
    proof = parity.batching(_graph([helper.make_node("Relu", ["x"], ["y"])], [None, 3]),
                            {"x": ROWS["x"][:5]})
    assert proof["rows"] == 5 and proof["rowsIndependent"] is True
