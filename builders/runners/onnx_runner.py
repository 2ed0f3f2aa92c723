"""Runs ``model.onnx`` with ONNX Runtime on the CPU inside Triton's python backend."""
import numpy as np
import onnxruntime as ort
from batching import BatchedModel


class TritonPythonModel(BatchedModel):
    def setup(self):
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.parameters.get("intra_op_thread_count", "0"))
        self.session = ort.InferenceSession(str(self.version_dir / self.parameters["artifact"]), options,
                                            providers=["CPUExecutionProvider"])

    def run(self, inputs):
        feeds = {name: np.stack(rows) for name, rows in inputs.items()}
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
