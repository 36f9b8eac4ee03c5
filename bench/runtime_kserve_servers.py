"""KServe-SDK baselines for bench/runtime_bench.py (not Serin code).

(a) `--kind sklearn`: what KServe's sklearnserver does: a kserve.Model that unpickles the
    scikit-learn model and calls its predict, served by kserve.ModelServer.
(b) `--kind onnx`: the same kserve.Model shape calling onnxruntime (1 intra-op thread, as
    Serin's runtime) on the converted model.

Both take kserve.ModelServer's own flags (--http_port, --workers, --enable_grpc, ...).
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import kserve
import numpy as np
import onnxruntime as ort
from kserve.utils.utils import get_predict_input, get_predict_response


class SKLearnModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self._model = joblib.load(self.path)
        self.ready = True
        return True

    def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        result = self._model.predict(get_predict_input(payload))
        return get_predict_response(payload, result, self.name)


class OnnxModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        self._input = self._sess.get_inputs()[0].name
        self.ready = True
        return True

    def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        x = np.asarray(get_predict_input(payload), dtype=np.float32)
        label = self._sess.run(["label"], {self._input: x})[0]
        return get_predict_response(payload, label, self.name)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--kind", choices=["sklearn", "onnx"], required=True)
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model_cls = SKLearnModel if args.kind == "sklearn" else OnnxModel
    model = model_cls(args.model_name, args.model_path)
    kserve.ModelServer(workers=args.workers).start([model])


if __name__ == "__main__":
    main()
