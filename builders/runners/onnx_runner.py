"""Runs ``model.onnx`` with ONNX Runtime on the CPU inside Triton's python backend."""
import numpy as np
import onnxruntime as ort
from batching import execute_batched, model_settings


class TritonPythonModel:
    def initialize(self, args):
        config, parameters, version_dir = model_settings(args)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameters.get("intra_op_thread_count", "0"))
        self.session = ort.InferenceSession(str(version_dir / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests):
        return execute_batched(requests, self.input_names, self.output_names, self._run)

    def _run(self, inputs):
        feeds = {name: np.stack(rows) for name, rows in inputs.items()}
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
