"""A product's router: the decision on what its parent, child and segmenter answered (ensemble steps before it)."""
import numpy as np
from batching import BatchedModel
from defect_routing import Rules, check_sizes, decide


class TritonPythonModel(BatchedModel):
    def setup(self):
        self.rules = Rules(self.parameters)

    def check(self, inputs):
        # Per request: an image too small to inspect fails its own request, not the batch it came in.
        check_sizes(np.stack(inputs[self.input_names[0]]), self.rules.min_side)

    def run(self, inputs):
        # The config declares the inputs and outputs in decide's order (builders/defect_router.py).
        outputs = decide(self.rules, *(np.stack(inputs[name]) for name in self.input_names))
        return {name: list(values) for name, values in zip(self.output_names, outputs)}
