"""The same numpy model as an MLServer custom runtime, for benchmarks.grpc to compare against.

MLServer imports this (model-settings.json: implementation benchmarks.mlserver_runtime.RnnAdd)
in its own venv (requirements-mlserver.txt); it loads the version CURRENT names with the same
store and Predictor as the service and answers the same outputs: sum, binary and correct.
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from training.predictor import Predictor
from training.store import ModelStore


class RnnAdd(MLModel):
    """Adds pairs with the network, as MLServer documents custom runtimes (load, predict)."""

    async def load(self) -> bool:
        """The active version of the model directory given as the model's uri."""
        store = ModelStore(self.settings.parameters.uri)
        model = store.load(store.current())
        self.predictor = Predictor(model.params)
        self.bits = int(model.bits)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """sum (INT64), binary (BYTES) and correct (BOOL) of inputs a and b."""
        arrays = {i.name: NumpyCodec.decode_input(i).reshape(-1) for i in payload.inputs}
        a, b = arrays["a"].tolist(), arrays["b"].tolist()
        bits = max(self.bits, max(max(a), max(b)).bit_length() + 1)
        sums = self.predictor.add(a, b, bits)
        total = np.asarray(sums, dtype=np.int64)
        binary = np.array([format(s, f"0{bits}b").encode() for s in sums], dtype=np.object_)
        correct = total == np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64)
        outputs = [NumpyCodec.encode_output("sum", total),
                   NumpyCodec.encode_output("binary", binary),
                   NumpyCodec.encode_output("correct", correct)]
        return InferenceResponse(model_name=self.name, outputs=outputs,
                                 parameters={"bits": bits})
