"""A product's router: calls its parent, then its child only for anomalies (BLS)."""
import numpy as np
import triton_python_backend_utils as pb_utils
from batching import BatchedModel
from defect_routing import Thresholds, check_sizes, inspect, present


class TritonPythonModel(BatchedModel):
    def setup(self):
        self.thresholds = Thresholds(self.parameters)
        scores = self.parameters.get("missing_scores")  # absent for a product without classes
        self.classes = int(self.config["output"][self.output_names.index(scores)]["dims"][0]) if scores else 0
        self.loaded_here = []  # BLS models this step loaded itself, unloaded with it

    def ensure_ready(self, model):
        """Load a BLS-called model on first use if nothing else did.

        A SageMaker multi-model endpoint loads only the archive's ensemble (and its steps);
        the models this step calls must then be loaded by the step. Under explicit model
        control elsewhere they are loaded at start-up (``bls_models``) and this does nothing.
        """
        if model in self.loaded_here or pb_utils.is_model_ready(model):
            return
        pb_utils.load_model(model_name=model)
        self.loaded_here.append(model)

    def call(self, model, images, outputs):
        """One BLS request with these rows; outputs come back in CPU memory."""
        self.ensure_ready(model)
        request = pb_utils.InferenceRequest(
            model_name=model, requested_output_names=outputs,
            inputs=[pb_utils.Tensor(self.parameters["image"], np.ascontiguousarray(images))],
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0))
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{model} failed: {response.error().message()}")
        return [pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs]

    def parent(self, images):
        return self.call(self.parameters["parent"], images,
                         [self.parameters["anomaly_score"], self.parameters["novelty"]])

    def child(self, images):
        return self.call(self.parameters["child"], images, [self.parameters["missing_scores"]])[0]

    def check(self, inputs):
        # Per request: an image too small to inspect fails its own request, not the batch it came in.
        check_sizes(np.stack(inputs[self.input_names[1]]), self.thresholds.min_side)

    def run(self, inputs):
        images, shapes = (np.stack(inputs[name]) for name in self.input_names)
        outputs = present(inspect(images, shapes, self.thresholds, self.classes, self.parent, self.child))
        # The config declares the outputs in this order (builders/defect_router.py).
        return {name: list(values) for name, values in zip(self.output_names, outputs)}

    def finalize(self):
        for model in self.loaded_here:
            pb_utils.unload_model(model)
