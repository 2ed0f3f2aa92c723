"""Shared request handling for the python-backend runners.

The dynamic batcher hands ``execute`` several requests at once; their rows are run as
one batch. If that batch fails, each request is run alone so that one bad request gets
its own error and the others still get their results.
"""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class BadInput(ValueError):
    """The request's data cannot be processed: reported to the client as INVALID_ARG."""


def model_settings(args):
    """(model config, parameters as plain strings, version folder) of the model being loaded."""
    config = json.loads(args["model_config"])
    parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
    version_dir = Path(args["model_repository"]) / args["model_version"]
    return config, parameters, version_dir


def execute_batched(requests, input_names, output_names, run):
    """``run(inputs: dict[name, list of arrays]) -> dict[name, array]`` over all rows of all requests."""
    try:
        return _run_together(requests, input_names, output_names, run)
    except Exception as error:  # one request may have spoiled the batch: isolate it
        if len(requests) == 1:
            return [_error_response(error)]
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
        tensors = [pb_utils.Tensor(name, np.ascontiguousarray(outputs[name][start:start + count]))
                   for name in output_names]
        responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        start += count
    return responses


def _error_response(error):
    code = pb_utils.TritonError.INVALID_ARG if isinstance(error, BadInput) else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), code))
