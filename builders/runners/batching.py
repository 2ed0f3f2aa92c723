"""Shared request handling for the python-backend runners.

The dynamic batcher hands ``execute`` several requests at once. Each request is read and
checked on its own (``check``), so a bad one fails alone; the good ones' rows then run as
one batch (``run``). A failure ``run`` ties to one row (``BadRow``) fails that row's request
alone and the others run on together; any other failure of a batch is the batch's, not a
request's, so each request is then run alone and only the failing ones fail. A bad input
(ValueError) answers 400 with its message; any other exception answers 500 in one line
naming the step and the cause, its traceback goes to the server log, and the model keeps serving.
"""
import json
import traceback
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class BadInput(ValueError):
    """The request's data cannot be processed. Any ValueError is reported as INVALID_ARG (HTTP 400)."""


class BadRow(BadInput):
    """``run`` could not process row ``row`` of the batch: the fault of that row's request alone."""

    def __init__(self, message, row):
        super().__init__(message)
        self.row = row


class BatchedModel(ABC):
    """Base of every runner: tensor names and parameters from the config; ``check`` and ``run`` do the work."""

    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        self.parameters = {key: value["string_value"] for key, value in self.config.get("parameters", {}).items()}
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        self.input_names = [tensor["name"] for tensor in self.config["input"]]
        self.output_names = [tensor["name"] for tensor in self.config["output"]]
        self.setup()

    def setup(self):
        """Load what the model runs; called once the config is read."""

    def check(self, inputs):
        """One request's rows (dict[input name, list of rows]); a ValueError fails that request alone."""

    @abstractmethod
    def run(self, inputs):
        """dict[input name, list of rows] -> dict[output name, rows]."""

    def execute(self, requests):
        return execute_batched(requests, self.input_names, self.output_names, self.run, step=self.config["name"],
                               check=self.check)


def per_row(function, *columns):
    """``function`` on each row of ``columns``; a ValueError names its row (``BadRow``), so only its request fails."""
    results = []
    for row, values in enumerate(zip(*columns)):
        try:
            results.append(function(*values))
        except ValueError as error:
            raise BadRow(str(error), row) from None
    return results


def execute_batched(requests, input_names, output_names, run, step="python step", check=None):
    """``run(inputs: dict[name, list of rows]) -> dict[name, rows]`` over the rows of all good requests.

    Rows are per-sample arrays; each request gets its own rows back, stacked, or its own error.
    """
    responses = [None] * len(requests)
    batch = []  # (index, rows) of the requests that passed their checks
    for index, request in enumerate(requests):
        try:
            rows = _read_rows(request, input_names)
            if check:
                check(rows)
            batch.append((index, rows))
        except Exception as error:  # this request's own rows: it fails alone
            responses[index] = _error_response(error, step)
    for index, response in _run_batch(batch, output_names, run, step):
        responses[index] = response
    return responses


def _read_rows(request, input_names):
    return {name: list(pb_utils.get_input_tensor_by_name(request, name).as_numpy()) for name in input_names}


def _run_batch(batch, output_names, run, step):
    """[(index, response)] for the checked requests of ``batch``, the good ones run together."""
    if not batch:
        return []
    inputs = {name: [row for _, rows in batch for row in rows[name]] for name in batch[0][1]}
    try:
        outputs = run(inputs)
    except Exception as error:
        if len(batch) == 1:
            return [(batch[0][0], _error_response(error, step))]
        if isinstance(error, BadRow):  # one request's row: it runs alone for its own error, the rest together
            bad = _request_of_row(batch, error.row)
            rest = batch[:bad] + batch[bad + 1:]
            return _run_batch(batch[bad:bad + 1], output_names, run, step) + _run_batch(rest, output_names, run, step)
        # The batched computation failed and no row was named: the cause may be any request or none,
        # so each runs alone and only the failing ones fail (a rare path: requests are checked first).
        pb_utils.Logger.log_warn(f"{step}: batch of {len(batch)} requests failed: {error}; running them one by one")
        return [answer for single in batch for answer in _run_batch([single], output_names, run, step)]
    return _split(batch, outputs, output_names, step)


def _request_of_row(batch, row):
    """Position in ``batch`` of the request that holds ``row`` of the batched inputs."""
    end = 0
    for position, (_, rows) in enumerate(batch):
        end += _row_count(rows)
        if row < end:
            return position
    raise IndexError(f"row {row} is past the batch of {end} rows")  # a runner's bug: it named a row it was not given


def _row_count(rows):
    return len(next(iter(rows.values())))


def _split(batch, outputs, output_names, step):
    """Each request's rows of ``outputs``, stacked into its response (or its own error)."""
    answers, start = [], 0
    for index, rows in batch:
        count = _row_count(rows)
        try:
            tensors = [pb_utils.Tensor(name, _stack(name, outputs[name][start:start + count]))
                       for name in output_names]
            answers.append((index, pb_utils.InferenceResponse(output_tensors=tensors)))
        except Exception as error:
            answers.append((index, _error_response(error, step)))
        start += count
    return answers


def _stack(name, rows):
    shapes = {np.shape(row) for row in rows}
    if len(shapes) > 1:
        raise BadInput(f"the images of one request give {name} of different shapes {sorted(shapes)}: "
                       "send one image per request, or images of one size")
    return np.ascontiguousarray(np.stack(rows))


def _error_response(error, step):
    if isinstance(error, ValueError):  # the request's fault: its message already names the problem
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG))
    pb_utils.Logger.log_error(f"{step} failed:\n{''.join(traceback.format_exception(error))}")
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(step_failure(step, error),
                                                                 pb_utils.TritonError.INTERNAL))


def step_failure(step, error):
    """One line for the client: which step failed, with what; an ensemble passes it on as is."""
    cause = " ".join(str(error).split()) or "(no message)"
    return f"python step {step} failed: {type(error).__name__}: {cause}"
