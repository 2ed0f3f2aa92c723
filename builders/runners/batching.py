"""Shared request handling for the python-backend runners.

The dynamic batcher hands ``execute`` several requests at once; their rows are run as
one batch. If that batch fails, each request is run alone so that one bad request gets
its own error and the others still get their results.
"""
import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class BadInput(ValueError):
    """The request's data cannot be processed. Any ValueError is reported as INVALID_ARG (HTTP 400)."""


class BatchedModel(ABC):
    """Base of every runner: tensor names and parameters from the config; ``run`` does the work."""

    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        self.parameters = {key: value["string_value"] for key, value in self.config.get("parameters", {}).items()}
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        self.input_names = [tensor["name"] for tensor in self.config["input"]]
        self.output_names = [tensor["name"] for tensor in self.config["output"]]
        self.setup()

    def setup(self):
        """Load what the model runs; called once the config is read."""

    @abstractmethod
    def run(self, inputs):
        """dict[input name, list of rows] -> dict[output name, rows]."""

    def execute(self, requests):
        return execute_batched(requests, self.input_names, self.output_names, self.run)


def execute_batched(requests, input_names, output_names, run):
    """``run(inputs: dict[name, list of rows]) -> dict[name, rows]`` over all rows of all requests.

    Rows are per-sample arrays; each request gets its own rows back, stacked.
    """
    try:
        return _run_together(requests, input_names, output_names, run)
    except Exception as error:  # one request may have spoiled the batch: isolate it
        if len(requests) == 1:
            return [_error_response(error)]
        pb_utils.Logger.log_warn(f"batch of {len(requests)} requests failed: {error}; running them one by one")
    return [execute_batched([request], input_names, output_names, run)[0] for request in requests]


def _run_together(requests, input_names, output_names, run):
    inputs = {name: [] for name in input_names}
    counts = []
    for request in requests:
        for name in input_names:
            inputs[name].extend(pb_utils.get_input_tensor_by_name(request, name).as_numpy())
        counts.append(len(inputs[input_names[0]]) - sum(counts))
    outputs = run(inputs)
    responses, start = [], 0
    for count in counts:
        tensors = [pb_utils.Tensor(name, _stack(name, outputs[name][start:start + count])) for name in output_names]
        responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        start += count
    return responses


def _stack(name, rows):
    shapes = {np.shape(row) for row in rows}
    if len(shapes) > 1:
        raise BadInput(f"the images of one request give {name} of different shapes {sorted(shapes)}: "
                       "send one image per request, or images of one size")
    return np.ascontiguousarray(np.stack(rows))


def _error_response(error):
    code = pb_utils.TritonError.INVALID_ARG if isinstance(error, ValueError) else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), code))
