"""Send one inference request over any of the routes a Triton deployment offers.

HTTP (JSON or binary tensors), gRPC, and SageMaker's ``/invocations`` (JSON or
binary+json). Payloads are built and parsed by tritonclient on every route.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

PROTOCOLS = ("http-json", "http-binary", "grpc", "sagemaker-json", "sagemaker-binary")
SAGEMAKER_BINARY_TYPE = "application/vnd.sagemaker-triton.binary+json"
HEADER_SIZE = re.compile(r"json-header-size=(\d+)")


class RequestError(RuntimeError):
    """The server refused or failed the request; the message is the server's."""


@dataclass(frozen=True)
class Route:
    protocol: str
    url: str  # host:port for http/grpc, http://host:port for SageMaker
    timeout_s: float = 120.0


def _binary(protocol: str) -> bool:
    return not protocol.endswith("json")


def _http_tensors(inputs: dict[str, np.ndarray], outputs: list[str], binary: bool, class_count: int):
    tensors = []
    for name, array in inputs.items():
        tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        tensors.append(tensor)
    requested = [httpclient.InferRequestedOutput(name, binary_data=binary, class_count=class_count)
                 for name in outputs]
    return tensors, requested


def _grpc_tensors(inputs: dict[str, np.ndarray], outputs: list[str], class_count: int):
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors, [grpcclient.InferRequestedOutput(name, class_count=class_count) for name in outputs]


def sagemaker_body(inputs: dict[str, np.ndarray], outputs: list[str], binary: bool,
                   class_count: int = 0) -> tuple[bytes, str]:
    """(request body, Content-Type) for SageMaker's Triton ``/invocations``."""
    tensors, requested = _http_tensors(inputs, outputs, binary, class_count)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(tensors, outputs=requested)
    if json_size is None:
        return body, "application/json"
    return body, f"{SAGEMAKER_BINARY_TYPE};json-header-size={json_size}"


def parse_sagemaker_response(body: bytes, content_type: str) -> httpclient.InferResult:
    match = HEADER_SIZE.search(content_type or "")
    header_length = int(match.group(1)) if match else None
    return httpclient.InferenceServerClient.parse_response_body(body, header_length=header_length)


def _sagemaker_infer(route: Route, inputs, outputs, class_count) -> dict[str, np.ndarray]:
    body, content_type = sagemaker_body(inputs, outputs, _binary(route.protocol), class_count)
    response = requests.post(f"{route.url}/invocations", data=body,
                             headers={"Content-Type": content_type}, timeout=route.timeout_s)
    if response.status_code != 200:
        raise RequestError(f"HTTP {response.status_code} from {route.url}/invocations: "
                           f"{_error_text(response)}")
    result = parse_sagemaker_response(response.content, response.headers.get("Content-Type", ""))
    return {name: result.as_numpy(name) for name in outputs}


def _error_text(response: requests.Response) -> str:
    try:
        return response.json().get("error", response.text)
    except ValueError:
        return response.text


def infer(route: Route, model: str, inputs: dict[str, np.ndarray], outputs: list[str],
          class_count: int = 0) -> dict[str, np.ndarray]:
    """Run ``model`` on ``inputs``; with ``class_count`` the server returns "score:index:label" strings."""
    if route.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {route.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if route.protocol.startswith("sagemaker"):
        return _sagemaker_infer(route, inputs, outputs, class_count)
    try:
        if route.protocol == "grpc":
            with grpcclient.InferenceServerClient(route.url) as client:
                tensors, requested = _grpc_tensors(inputs, outputs, class_count)
                result = client.infer(model, tensors, outputs=requested, client_timeout=route.timeout_s)
        else:
            with httpclient.InferenceServerClient(route.url, network_timeout=route.timeout_s) as client:
                tensors, requested = _http_tensors(inputs, outputs, _binary(route.protocol), class_count)
                result = client.infer(model, tensors, outputs=requested)
    except InferenceServerException as error:
        raise RequestError(f"{route.protocol} {route.url}: {error.message()}") from None
    return {name: result.as_numpy(name) for name in outputs}
