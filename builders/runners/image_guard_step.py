"""A guard (``builders/image_guard.py``): admission at the pipeline's entrance, then every image
measured by its header and passed on unchanged."""
import triton_python_backend_utils as pb_utils
from admission import TokenBucket, parse_rate, remove_stale, shared_path
from batching import BatchedModel
from image_headers import Limits

# Triton's own words for a full queue (HTTP 503, gRPC UNAVAILABLE): clients read them as overload
QUEUE_FULL = "Exceeds maximum queue size"


class TritonPythonModel(BatchedModel):
    def setup(self):
        name = self.config["name"]
        self.limits = Limits.from_parameters(self.parameters, owner=name)
        rate = parse_rate(self.parameters.get("admission_rps", "0"), owner=name)
        remove_stale(name)
        self.gate = TokenBucket(rate, shared_path(name)) if rate else None
        self.refusal = (f"{QUEUE_FULL} of the pipeline: {name} admits {rate:g} requests/s, what the pipeline "
                        "serves (parameter admission_rps)")

    def execute(self, requests):
        # Refused first, before any input is read: a refused request costs the pipeline nothing more.
        admitted = self.gate.admit(len(requests)) if self.gate else len(requests)
        return super().execute(requests[:admitted]) + [self.refused() for _ in requests[admitted:]]

    def refused(self):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(self.refusal, pb_utils.TritonError.UNAVAILABLE))

    def finalize(self):
        if self.gate:
            self.gate.close()

    def check(self, inputs):
        # Per request: an image refused here fails its own request, never the batch it came in.
        for name, rows in inputs.items():
            self.limits.check_batch(name, [row.tobytes() for row in rows])

    def run(self, inputs):
        # Outputs are declared in the order of the inputs they pass on.
        return {output: inputs[name] for name, output in zip(self.input_names, self.output_names)}
