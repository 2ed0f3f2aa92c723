"""A guard (``builders/image_guard.py``): every image measured by its header, then passed on unchanged."""
from batching import BatchedModel
from image_headers import Limits


class TritonPythonModel(BatchedModel):
    def setup(self):
        self.limits = Limits.from_parameters(self.parameters, owner=self.config["name"])

    def check(self, inputs):
        # Per request: an image refused here fails its own request, never the batch it came in.
        for name, rows in inputs.items():
            self.limits.check_batch(name, [row.tobytes() for row in rows])

    def run(self, inputs):
        # Outputs are declared in the order of the inputs they pass on.
        return {output: inputs[name] for name, output in zip(self.input_names, self.output_names)}
