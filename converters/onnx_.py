"""ONNX passthrough: an existing .onnx model gets checked, profiled and stamped, not converted.

There is no native model to compare with: the parity step still runs the model on the sample
(which proves it loads and accepts the sample's columns), and the report says so in a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pandas as pd
from serin.converters.errors import ConversionError, UnsupportedModel, first_line
from serin.converters.registry import CLASSIFICATION, REGRESSION, Outputs
from serin.converters.sample import InputSpec, Sample, align

TESTED: tuple[str, ...] = ("ModelProto",)
_ELEM: dict[int, str] = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64",
         onnx.TensorProto.INT64: "int64", onnx.TensorProto.STRING: "string"}


def load_onnx(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, ValidationError, ...
        raise ConversionError(
            f"cannot load ONNX model {path.name}: the file is corrupt, truncated or invalid "
            f"({first_line(exc, 120)})"
        ) from exc
    return model


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None
            for d in value.type.tensor_type.shape.dim]


class OnnxPassthrough:
    format = "onnx"
    tested = TESTED

    def check(self, model: Any) -> list[str]:
        for out in model.graph.output:
            if not out.type.HasField("tensor_type"):
                raise UnsupportedModel(
                    f"ONNX output {out.name!r} is not a tensor (ZipMap's sequence of maps?); "
                    "re-export the classifier with zipmap disabled"
                )
        for value in _graph_inputs(model):
            if value.type.tensor_type.elem_type not in _ELEM:
                raise UnsupportedModel(f"ONNX input {value.name!r} has an unsupported element type")
        return ["ONNX passthrough: no native model to compare with; parity only proves the model "
                "runs on the sample"]

    def describe(self, model: Any) -> str:
        producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
        return f"ONNX({producer or model.graph.name})"

    def task(self, model: Any) -> str:
        outputs = model.graph.output
        if len(outputs) >= 2 and outputs[0].type.tensor_type.elem_type in (
            onnx.TensorProto.INT64, onnx.TensorProto.STRING
        ):
            return CLASSIFICATION
        return REGRESSION

    def prepare(self, model: Any, frame: pd.DataFrame) -> Sample:
        inputs = _graph_inputs(model)
        dims = _dims(inputs[0]) if len(inputs) == 1 else []
        width = dims[1] if len(dims) == 2 else None
        if len(inputs) == 1 and width != 1:  # one [N, F] matrix: columns go by position
            frame = align(frame, width, None)
            spec = InputSpec(inputs[0].name, _ELEM[inputs[0].type.tensor_type.elem_type],
                             tuple(frame.columns))
            return Sample(frame, (spec,), native_frame=False, layout="matrix")
        # One [N, 1] input per column: the sample's header must name the inputs.
        names = [i.name for i in inputs]
        frame = align(frame, None, names)
        specs = tuple(InputSpec(i.name, _ELEM[i.type.tensor_type.elem_type], (i.name,))
                      for i in inputs)
        return Sample(frame, specs, native_frame=True, layout="columns")

    def widened(self, model: Any, sample: Sample, opset: int) -> onnx.ModelProto | None:
        return None  # an ONNX file's inputs are what its author declared

    def convert(self, model: Any, sample: Sample, opset: int) -> onnx.ModelProto:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        keep = [p for p in copy.metadata_props if not p.key.startswith("serin.")]
        del copy.metadata_props[:]
        copy.metadata_props.extend(keep)
        return copy

    def predict(self, model: Any, sample: Sample) -> Outputs:
        from serin.converters.parity import onnx_outputs, run_onnx

        try:
            raw = run_onnx(model.SerializeToString(), sample.feeds())
        except Exception as exc:
            raise ConversionError(f"the ONNX model fails on the sample: {first_line(exc, 200)}") \
                from exc
        return onnx_outputs(raw, self.task(model))

    def classes(self, model: Any) -> list[Any] | None:
        return None


CONVERTER = OnnxPassthrough()
