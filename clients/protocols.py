"""Send one inference request over any of the routes a Triton deployment offers.

HTTP (JSON or binary tensors), gRPC, and SageMaker's ``/invocations`` (JSON or
binary+json). Payloads are built and parsed by tritonclient on every route.
"""
from __future__ import annotations

import argparse
import atexit
import functools
import os
import re
import threading
from dataclasses import dataclass

import numpy as np
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from sagemaker_deploy.runtime import invoke_until_ready

SERVER_PROTOCOLS = ("http-json", "http-binary", "grpc", "sagemaker-json", "sagemaker-binary")  # a tritonserver's own
ENDPOINT_PROTOCOLS = ("sagemaker-endpoint", "sagemaker-endpoint-json")  # a deployed endpoint, through boto3
PROTOCOLS = (*SERVER_PROTOCOLS, *ENDPOINT_PROTOCOLS)
SAGEMAKER_REALTIME_LIMIT = 6 * 1024 * 1024  # bytes of request body a real-time endpoint accepts
SAGEMAKER_BINARY_TYPE = "application/vnd.sagemaker-triton.binary+json"
HEADER_SIZE = re.compile(r"json-header-size=(\d+)")


# What Triton answers (HTTP 503, gRPC UNAVAILABLE) when a model's queue policy sheds a request:
# the queue was full, or the request waited past the queue's timeout (tritonserver 2.51, seen here).
OVERLOAD_ANSWERS = ("Exceeds maximum queue size", "Request timeout expired")


class RequestError(RuntimeError):
    """The server refused or failed the request; the message is the server's."""


class ServerOverloaded(RequestError):
    """The server shed the request under load (its queue was full or the wait ran out): nothing is
    wrong with the request; send it again later, with backoff."""


EXIT_OVERLOADED = os.EX_TEMPFAIL  # 75, "temporary failure; the user is invited to retry" (sysexits.h)


def failure_line(error: Exception) -> str:
    """One line for a failed request: overload is named as such, never shown as a crash."""
    return f"overloaded: {error}" if isinstance(error, ServerOverloaded) else f"error: {error}"


def exit_status(errors: list[Exception]) -> int:
    """0 without errors; EXIT_OVERLOADED when every failure was the server shedding load; else 1."""
    if not errors:
        return 0
    return EXIT_OVERLOADED if all(isinstance(error, ServerOverloaded) for error in errors) else 1


def request_error(where: str, answer: str, evidence: str = "", via: str = "") -> RequestError:
    """The error for a server's refusal: ``ServerOverloaded`` when Triton shed the request (seen in
    the answer, or in ``evidence``: what else came with it); ``via`` says how it was passed on."""
    shed = next((marker for marker in OVERLOAD_ANSWERS if marker in f"{answer} {evidence}"), None)
    if shed:
        return ServerOverloaded(f"{where}: the server is overloaded and refused the request ({shed}{via}); "
                                "retry later with backoff, or serve with more instances")
    return RequestError(f"{where}: {answer}")


@dataclass(frozen=True)
class Route:
    protocol: str
    url: str  # host:port for http/grpc, http://host:port for SageMaker; for an endpoint, an endpoint_url or ""
    timeout_s: float = 120.0
    endpoint_name: str = ""  # sagemaker-endpoint: the deployed endpoint, called through boto3
    region: str | None = None
    target_model: str = ""  # sagemaker-endpoint on a multi-model endpoint: the archive, e.g. "ensemble_lama.tar.gz"


def _binary(protocol: str) -> bool:
    return not protocol.endswith("json")


def _class_count(class_count: int | dict[str, int], output: str) -> int:
    """One count for every output, or a count per output name (0: the raw tensor)."""
    return class_count.get(output, 0) if isinstance(class_count, dict) else class_count


def _http_tensors(inputs: dict[str, np.ndarray], outputs: list[str], binary: bool, class_count):
    tensors = []
    for name, array in inputs.items():
        tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        tensors.append(tensor)
    requested = [httpclient.InferRequestedOutput(name, binary_data=binary,
                                                 class_count=_class_count(class_count, name)) for name in outputs]
    return tensors, requested


def _grpc_tensors(inputs: dict[str, np.ndarray], outputs: list[str], class_count):
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors, [grpcclient.InferRequestedOutput(name, class_count=_class_count(class_count, name))
                     for name in outputs]


def sagemaker_body(inputs: dict[str, np.ndarray], outputs: list[str], binary: bool,
                   class_count: int | dict[str, int] = 0) -> tuple[bytes, str]:
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
    response = _http_session().post(f"{route.url}/invocations", data=body,
                             headers={"Content-Type": content_type}, timeout=route.timeout_s)
    if response.status_code != 200:
        raise request_error(f"HTTP {response.status_code} from {route.url}/invocations", _error_text(response))
    result = parse_sagemaker_response(response.content, response.headers.get("Content-Type", ""))
    return {name: result.as_numpy(name) for name in outputs}


def _runtime_client(region: str | None, endpoint_url: str, timeout_s: float):
    """One boto3 client per endpoint: building one costs milliseconds, which a benchmark would count.

    Without an explicit URL boto3 takes it from the environment, so that is part of the key.
    """
    from_environment = os.environ.get("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME") or os.environ.get("AWS_ENDPOINT_URL", "")
    return _cached_runtime_client(region, endpoint_url, from_environment if not endpoint_url else "", timeout_s)


@functools.lru_cache(maxsize=8)
def _cached_runtime_client(region: str | None, endpoint_url: str, environment_url: str, timeout_s: float):
    import boto3
    import botocore.config

    config = botocore.config.Config(read_timeout=timeout_s, retries={"max_attempts": 1})
    return boto3.session.Session().client("sagemaker-runtime", region_name=region,
                                          endpoint_url=endpoint_url or None, config=config)


def _endpoint_infer(route: Route, inputs, outputs, class_count) -> dict[str, np.ndarray]:
    """boto3 ``invoke_endpoint`` (binary+json or JSON body), refused locally when over the 6 MB limit."""
    import botocore.exceptions

    body, content_type = sagemaker_body(inputs, outputs, binary=not route.protocol.endswith("json"),
                                        class_count=class_count)
    if len(body) > SAGEMAKER_REALTIME_LIMIT:
        raise RequestError(f"the request body is {len(body) / 2**20:.1f} MiB, over the 6 MiB limit of a SageMaker "
                           "real-time endpoint: send fewer or smaller images, or use an async endpoint")
    try:
        runtime = _runtime_client(route.region, route.url, route.timeout_s)
        target = {"TargetModel": route.target_model} if route.target_model else {}
        response = invoke_until_ready(lambda: runtime.invoke_endpoint(
            EndpointName=route.endpoint_name, ContentType=content_type, Body=body, **target))
    except botocore.exceptions.NoCredentialsError:
        raise RequestError("no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from None
    except botocore.exceptions.NoRegionError:
        raise RequestError("no AWS region: pass --region or set AWS_DEFAULT_REGION") from None
    except botocore.exceptions.ClientError as error:
        # SageMaker passes a container's 4xx/5xx on as ModelError (HTTP 424) with the container's
        # OriginalStatusCode and OriginalMessage (InvokeEndpoint API reference, Errors: "ModelError:
        # Model (owned by the customer in the container) returned 4xx or 5xx error code"), so
        # Triton's overload answer arrives inside it.
        code = error.response.get("Error", {}).get("Code", "")
        raise request_error(f"endpoint {route.endpoint_name}", str(error),
                            str(error.response.get("OriginalMessage", "")),
                            f", as SageMaker {code} of the container's {error.response.get('OriginalStatusCode')}"
                            ) from None
    except botocore.exceptions.BotoCoreError as error:
        raise RequestError(f"endpoint {route.endpoint_name}: {error}") from None
    result = parse_sagemaker_response(response["Body"].read(), response["ContentType"])
    return {name: result.as_numpy(name) for name in outputs}


def _error_text(response: requests.Response) -> str:
    try:
        return response.json().get("error", response.text)
    except ValueError:
        return response.text


_THREAD_CLIENTS = threading.local()
_OPEN_CLIENTS: list = []  # every thread's, closed at exit: a gRPC channel left to __del__ fails at shutdown


def _triton_client(route: Route):
    """This thread's client for the route: connections are kept open between requests."""
    clients = _THREAD_CLIENTS.__dict__.setdefault("clients", {})
    key = (route.protocol == "grpc", route.url, route.timeout_s)
    if key not in clients:
        clients[key] = (grpcclient.InferenceServerClient(route.url) if route.protocol == "grpc" else
                        httpclient.InferenceServerClient(route.url, network_timeout=route.timeout_s,
                                                         connection_timeout=route.timeout_s))
        _OPEN_CLIENTS.append(clients[key])
    return clients[key]


@atexit.register
def _close_clients() -> None:
    for client in _OPEN_CLIENTS:
        client.close()


def _http_session() -> requests.Session:
    return _THREAD_CLIENTS.__dict__.setdefault("session", requests.Session())


def infer(route: Route, model: str, inputs: dict[str, np.ndarray], outputs: list[str],
          class_count: int | dict[str, int] = 0) -> dict[str, np.ndarray]:
    """Run ``model`` on ``inputs``; with ``class_count`` (for every output, or per output name) the
    server returns those outputs as "score:index:label" strings."""
    if route.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {route.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if route.protocol in ENDPOINT_PROTOCOLS:
        return _endpoint_infer(route, inputs, outputs, class_count)
    try:
        return _server_infer(route, model, inputs, outputs, class_count)
    except OSError as error:  # refused, reset, unreachable: requests' and gevent's errors are OSErrors
        raise RequestError(f"{route.protocol} {route.url}: cannot reach the server: {error}") from None


def _server_infer(route: Route, model: str, inputs, outputs, class_count) -> dict[str, np.ndarray]:
    if route.protocol.startswith("sagemaker"):
        return _sagemaker_infer(route, inputs, outputs, class_count)
    try:
        client = _triton_client(route)
        if route.protocol == "grpc":
            tensors, requested = _grpc_tensors(inputs, outputs, class_count)
            result = client.infer(model, tensors, outputs=requested, client_timeout=route.timeout_s)
        else:
            tensors, requested = _http_tensors(inputs, outputs, _binary(route.protocol), class_count)
            result = client.infer(model, tensors, outputs=requested)
    except InferenceServerException as error:
        raise request_error(f"{route.protocol} {route.url}", error.message() or str(error)) from None
    return {name: result.as_numpy(name) for name in outputs}


def server_route(server, protocol: str) -> Route:
    """The route to a running ``local_server.TritonServer`` over one of its own protocols."""
    if protocol.startswith("sagemaker"):
        return Route(protocol, server.sagemaker_url)
    return Route(protocol, server.grpc_url if protocol == "grpc" else server.http_url)


def default_url(protocol: str) -> str:
    if protocol in ENDPOINT_PROTOCOLS:
        return ""  # boto3 finds the regional endpoint
    if protocol.startswith("sagemaker"):
        return "http://127.0.0.1:8080"
    return "127.0.0.1:8001" if protocol == "grpc" else "127.0.0.1:8000"


def add_route_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=PROTOCOLS, default="http-binary")
    parser.add_argument("--url", help="server address (default: the protocol's usual local port); for "
                                      "sagemaker-endpoint, an endpoint_url overriding AWS's")
    parser.add_argument("--endpoint-name", default="", help="sagemaker-endpoint*: the deployed endpoint")
    parser.add_argument("--region", help="sagemaker-endpoint*: AWS region (default: boto3's)")
    parser.add_argument("--target-model", default="",
                        help="sagemaker-endpoint* on a multi-model endpoint: the pipeline's archive, e.g. "
                             "ensemble_lama.tar.gz")


def route_from_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Route:
    if args.protocol in ENDPOINT_PROTOCOLS and not args.endpoint_name:
        parser.error(f"--protocol {args.protocol} needs --endpoint-name")
    if args.target_model and args.protocol not in ENDPOINT_PROTOCOLS:
        parser.error(f"--target-model needs --protocol {' or '.join(ENDPOINT_PROTOCOLS)}")
    return Route(args.protocol, args.url or default_url(args.protocol), endpoint_name=args.endpoint_name,
                 region=args.region, target_model=args.target_model)
