"""Refuse an inference request whose inputs declare a shape their data does not fill.

tritonserver up to 2.58 sizes the buffer of a JSON input from its declared shape before it
looks at the data: a 95-byte request declaring ``[1, 1000000000000]`` with one element
aborts the server (``std::bad_alloc``), ``[1, 3000000000]`` allocates 3 GB before the 500.
Everything the project puts in front of Triton checks the request with
``check_inference_request`` first. Only the JSON header is parsed; binary tensor bytes are
counted, never decoded.
"""
from __future__ import annotations

import json

# Triton's SageMaker frontend reads the JSON header's size only from this exact prefix.
SAGEMAKER_BINARY_PREFIX = "application/vnd.sagemaker-triton.binary+json;json-header-size="
BYTES_LENGTH_PREFIX = 4  # each BYTES element is sent as a 4-byte length, then its bytes
MAX_ELEMENTS = 2**63 - 1  # Triton counts elements in an int64
MAX_SHAPE_TEXT = 200

ELEMENT_SIZES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
                 "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8, "BYTES": None}


class InvalidInferenceRequest(ValueError):
    """The request's declared shapes or sizes do not match what it carries."""


def check_inference_request(body: bytes, content_type: str, inference_header_length: str | None = None) -> None:
    """Raise ``InvalidInferenceRequest`` naming the first input whose shape and data disagree.

    ``content_type`` may carry SageMaker's ``json-header-size=N``; ``inference_header_length``
    is KServe's ``Inference-Header-Content-Length`` header. Without either, the whole body is
    the JSON request.
    """
    header_size = json_header_size(content_type, inference_header_length, len(body))
    header = parse_json_header(body[:header_size])
    binary_sizes = [check_input(position, tensor) for position, tensor in enumerate(inputs_of(header))]
    carried = len(body) - header_size
    if sum(binary_sizes) != carried:
        raise InvalidInferenceRequest(f"the inputs declare {sum(binary_sizes)} bytes of binary data "
                                      f"but the body carries {carried} after the JSON header")


def json_header_size(content_type: str, inference_header_length: str | None, body_size: int) -> int:
    declared, source = inference_header_length, "Inference-Header-Content-Length"
    if (content_type or "").startswith(SAGEMAKER_BINARY_PREFIX):
        declared, source = content_type[len(SAGEMAKER_BINARY_PREFIX):].split(";")[0], "json-header-size"
    if declared is None:
        return body_size
    digits = declared.strip()
    if not (digits.isascii() and digits.isdigit()) or not 0 < int(digits) <= body_size:  # "²".isdigit() too
        raise InvalidInferenceRequest(f"{source}={declared} does not fit the {body_size}-byte body "
                                      f"(it must be a whole number from 1 to {body_size})")
    return int(declared)


def parse_json_header(header: bytes) -> dict:
    try:
        request = json.loads(header)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise InvalidInferenceRequest(f"the inference request's JSON header is not valid JSON: {error}") from None
    if not isinstance(request, dict):
        raise InvalidInferenceRequest("the inference request's JSON header is not a JSON object")
    return request


def inputs_of(request: dict) -> list[dict]:
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(tensor, dict) for tensor in inputs):
        raise InvalidInferenceRequest("the inference request has no 'inputs' list of objects")
    return inputs


def check_input(position: int, tensor: dict) -> int:
    """Check one input against its declared shape; return the binary bytes it announces."""
    name = tensor.get("name", f"#{position}")
    shape, datatype = tensor.get("shape"), tensor.get("datatype")
    shape_text = shape_as_written(shape)
    if not isinstance(shape, list) or not all(is_dimension(dim) for dim in shape):
        raise InvalidInferenceRequest(f"input '{name}' declares shape {shape_text}: "
                                      "dimensions must be non-negative integers")
    if datatype not in ELEMENT_SIZES:
        raise InvalidInferenceRequest(f"input '{name}' declares datatype {datatype!r}, "
                                      f"not one of {', '.join(ELEMENT_SIZES)}")
    elements = element_count(shape)
    if elements is None:
        raise InvalidInferenceRequest(f"input '{name}' declares shape {shape_text}: more than "
                                      f"{MAX_ELEMENTS} elements")
    parameters = tensor.get("parameters") if isinstance(tensor.get("parameters"), dict) else {}
    if "binary_data_size" in parameters:
        return check_binary_size(name, shape_text, datatype, elements, parameters["binary_data_size"])
    if "data" in tensor:
        found = count_elements(tensor["data"])
        if found != elements:
            raise InvalidInferenceRequest(f"input '{name}' declares shape {shape_text} ({elements} elements) "
                                          f"but its 'data' holds {found}")
    return 0


def shape_as_written(shape) -> str:
    """The shape in JSON ([1, true], not [1, True]), cut short so a message stays one line."""
    text = json.dumps(shape)
    return text if len(text) <= MAX_SHAPE_TEXT else text[:MAX_SHAPE_TEXT] + "...]"


def is_dimension(dim) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


def element_count(shape: list[int]) -> int | None:
    """The product of the dimensions, or None past MAX_ELEMENTS (stops early: dims may be huge)."""
    count = 1
    for dim in shape:
        count *= dim
        if count > MAX_ELEMENTS:
            return None
    return count


def check_binary_size(name: str, shape_text: str, datatype: str, elements: int, size) -> int:
    if not is_dimension(size):
        raise InvalidInferenceRequest(f"input '{name}' declares binary_data_size {size!r}, "
                                      "not a non-negative integer")
    element_size = ELEMENT_SIZES[datatype]
    if element_size is None and size < elements * BYTES_LENGTH_PREFIX:
        raise InvalidInferenceRequest(f"input '{name}' declares shape {shape_text} of BYTES ({elements} elements, at "
                                      f"least {elements * BYTES_LENGTH_PREFIX} bytes) but binary_data_size is {size}")
    if element_size is not None and size != elements * element_size:
        raise InvalidInferenceRequest(f"input '{name}' declares shape {shape_text} of {datatype} "
                                      f"({elements * element_size} bytes) but binary_data_size is {size}")
    return size


def count_elements(data) -> int:
    """Leaves of a nested JSON array, counted without recursion (the nesting may be deep)."""
    count, pending = 0, [data]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        else:
            count += 1
    return count
