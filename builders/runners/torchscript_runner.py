"""Runs ``model.pt`` (TorchScript) with libtorch on the CPU inside Triton's python backend."""
import numpy as np
import torch
from batching import BatchedModel


class TritonPythonModel(BatchedModel):
    def setup(self):
        self.module = torch.jit.load(str(self.version_dir / self.parameters["artifact"]), map_location="cpu").eval()

    def run(self, inputs):
        # Positional, in config order: the PyTorch backend's convention for TorchScript.
        arguments = [torch.from_numpy(np.stack(inputs[name])) for name in self.input_names]
        with torch.no_grad():
            outputs = self.module(*arguments)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        return {name: output.numpy() for name, output in zip(self.output_names, outputs)}
