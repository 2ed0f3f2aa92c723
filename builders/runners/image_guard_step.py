"""A guard (``builders/image_guard.py``): every image measured by its header, then passed on unchanged."""
from batching import BatchedModel
from image_headers import Limits


class TritonPythonModel(BatchedModel):
    def setup(self):
        self.limits = Limits.from_parameters(self.parameters, owner=self.config["name"])

    def run(self, inputs):
        for name, rows in inputs.items():
            self.limits.check_batch(name, [row.tobytes() for row in rows])
        # Outputs are declared in the order of the inputs they pass on.
        return {output: inputs[name] for name, output in zip(self.input_names, self.output_names)}
