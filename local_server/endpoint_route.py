"""A local stand-in for the SageMaker runtime route ``POST /endpoints/<name>/invocations``.

boto3's ``sagemaker-runtime`` client, given ``endpoint_url`` of this route, sends exactly
the request it would send to AWS; the route hands body and content type to a
tritonserver started the way SageMaker's Triton container starts it, and returns the
container's answer. It holds requests to SageMaker's real-time limits and answers with
SageMaker's errors (sources in the comments):

- a body over 6,291,456 bytes is refused, unread by the container: InvokeEndpoint's
  ``Body`` has "Length Constraints: Maximum length of 6291456" (API reference,
  API_runtime_InvokeEndpoint); the service answers HTTP 413 "HTTP content length exceeded
  N bytes." (as reported in github.com/aws/sagemaker-python-sdk/issues/171);
- a container that has not answered after ``timeout_s`` (60 s: "A customer's model
  containers must respond to requests within 60 seconds", same page) gives ModelError
  with SageMaker's "Your invocation timed out ..." message;
- a container's 4xx/5xx is a ``ModelError`` (HTTP 424: "Model (owned by the customer in
  the container) returned 4xx or 5xx error code") carrying the container's status and
  message and pointing at the endpoint's CloudWatch log group. That includes an overloaded
  container: Triton's queue policy answers 503 "Exceeds maximum queue size" (queue full) or
  "Request timeout expired" (waited past its share of the latency budget), and SageMaker does
  not retry or throttle it for the container but passes it on as this ModelError, with
  ``OriginalStatusCode`` 503 (InvokeEndpoint's documented errors: ModelError is the container's
  4xx/5xx; ServiceUnavailable and ModelNotReadyException are SageMaker's own states, not the
  container's); ``clients.protocols`` reports it as overload;
- an unknown endpoint is a ``ValidationError`` (HTTP 400).
"""
from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from local_server.invocation import TARGET_HEADER, InvocationError
from local_server.request_guard import InvalidInferenceRequest, check_inference_request
from local_server.serial_pipeline import ContainerFailed, SerialPipeline
from local_server.server import free_port

REALTIME_BODY_LIMIT = 6291456  # bytes, InvokeEndpoint Body "Maximum length of 6291456"
REALTIME_TIMEOUT_S = 60.0  # "model containers must respond to requests within 60 seconds"
DEFAULT_ACCOUNT = "123456789012"  # moto's account id
TIMED_OUT = ("Your invocation timed out while waiting for a response from container primary. Review the latency "
             "metrics for each container in Amazon CloudWatch, resolve the issue, and try again.")
# While no container is in service SageMaker answers ServiceUnavailable (HTTP 503); a request whose
# container went away under it gets ModelError with original status 0 (API_runtime_InvokeEndpoint,
# "Errors"; github.com/aws/amazon-sagemaker-examples/issues/2815 quotes the latter).
UNAVAILABLE = "The service is unavailable. Try your call again."
NO_RESPONSE = "Your invocation could not get a response from container primary"
_DRAIN_CHUNK = 2**20


class EndpointRoute:
    """Serves ``/endpoints/<name>/invocations`` for each name -> container base URL, or, for a
    multi-model endpoint, the ``local_server.multi_model.MultiModelHost`` in front of its container."""

    def __init__(self, endpoints: dict[str, str], port: int | None = None, async_handler=None,
                 timeout_s: float = REALTIME_TIMEOUT_S, body_limit: int = REALTIME_BODY_LIMIT,
                 region: str = "us-east-1", account: str = DEFAULT_ACCOUNT):
        """``async_handler(name, headers) -> (status, headers, body)`` serves ``/async-invocations``."""
        self.endpoints = dict(endpoints)
        self.async_handler = async_handler
        self.timeout_s = timeout_s
        self.body_limit = body_limit
        self.region, self.account = region, account
        self.requests_seen = 0
        self.requests_forwarded = 0
        self.port = port or free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "EndpointRoute":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "EndpointRoute":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def logs_hint(self, endpoint: str) -> str:
        """The pointer SageMaker appends to a ModelError's message."""
        return (f"See https://{self.region}.console.aws.amazon.com/cloudwatch/home?region={self.region}"
                f"#logEventViewer:group=/aws/sagemaker/Endpoints/{endpoint} in account {self.account} "
                "for more information.")

    def model_error(self, endpoint: str, status: int, message: str,
                    container: str = "primary") -> tuple[int, str, dict]:
        """(HTTP status, message, extra fields) of SageMaker's ModelError for a container's answer (``container``:
        its ContainerHostname in a serial pipeline)."""
        kind = "client" if 400 <= status < 500 else "server"
        text = (f"Received {kind} error ({status}) from {container} with message \"{message}\". "
                f"{self.logs_hint(endpoint)}")
        return 424, text, {"OriginalStatusCode": status, "OriginalMessage": message}

    def _handler(self):
        endpoints, route = self.endpoints, self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test and benchmark output clean
                pass

            def do_POST(self) -> None:
                route.requests_seen += 1
                parts = self.path.strip("/").split("/")
                declared = self.headers.get("Content-Length", "0")
                if not (declared.isascii() and declared.isdigit()):  # the body cannot be found: the connection ends
                    self.close_connection = True
                    return self._error(400, "ValidationError", f"Content-Length {declared[:40]!r} is not a number "
                                       "of bytes")
                length = int(declared)
                if len(parts) != 3 or parts[0] != "endpoints" or parts[2] not in ("invocations", "async-invocations"):
                    self._drain(length)
                    return self._error(404, "UnknownOperationException", f"no route for {self.path}")
                name, operation = parts[1], parts[2]
                if operation == "invocations" and length > route.body_limit:
                    self._drain(length)  # read, not kept: the client gets the answer, not a broken pipe
                    return self._error(413, "", f"HTTP content length exceeded {route.body_limit} bytes.")
                body = self.rfile.read(length)
                if name not in endpoints:
                    return self._error(400, "ValidationError", f"Endpoint {name} of account {route.account} not found.")
                if operation == "async-invocations":
                    return self._invoke_async(name)
                if isinstance(endpoints[name], SerialPipeline):  # its first container reads the body, not Triton
                    return self._invoke_pipeline(name, body)
                try:  # a JSON shape its data does not fill aborts tritonserver <= 2.58: never forward it
                    check_inference_request(body, self.headers.get("Content-Type", ""))
                except InvalidInferenceRequest as error:
                    return self._error(400, "ValidationError", str(error))
                target = self.headers.get(TARGET_HEADER)
                if not isinstance(endpoints[name], str):  # a multi-model endpoint's host
                    return self._invoke_target(name, target, body)
                if target:
                    return self._error(400, "ValidationError", f"Endpoint {name} is not a multi-model endpoint: "
                                       f"TargetModel {target} cannot be used with it.")
                self._invoke(name, body)

            def _invoke_target(self, name: str, target: str | None, body: bytes) -> None:
                if not target:
                    return self._error(400, "ValidationError", f"Endpoint {name} is a multi-model endpoint: "
                                       "the request must name its TargetModel.")
                route.requests_forwarded += 1
                try:
                    answer = endpoints[name].invoke(target, body, self.headers.get("Content-Type", ""))
                except InvocationError as error:
                    return self._error(error.status, error.error_type, str(error))
                self._reply(answer.status, answer.content_type, answer.body)

            def _invoke_pipeline(self, name: str, body: bytes) -> None:
                route.requests_forwarded += 1
                try:
                    answer = endpoints[name].invoke(body, self.headers.get("Content-Type", ""),
                                                    self.headers.get("Accept", ""), route.timeout_s)
                except ContainerFailed as failure:
                    status, message, details = route.model_error(name, failure.status, pipeline_failure(failure),
                                                                 failure.container)
                    return self._error(status, "ModelError", message, **details)
                self._reply(answer.status, answer.content_type, answer.body)

            def _invoke_async(self, name: str) -> None:
                if route.async_handler is None:
                    return self._error(400, "ValidationError", f"Endpoint {name} is not asynchronous.")
                status, headers, answer = route.async_handler(name, self.headers)
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(answer))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(answer)

            def _invoke(self, name: str, body: bytes) -> None:
                route.requests_forwarded += 1
                request = urllib.request.Request(f"{endpoints[name]}/invocations", data=body, method="POST",
                                                 headers={"Content-Type": self.headers.get("Content-Type", "")})
                try:
                    # the container sends its status line only once the inference is done, so the
                    # socket timeout bounds the time to answer
                    with urllib.request.urlopen(request, timeout=route.timeout_s) as response:
                        self._reply(200, response.headers.get("Content-Type", ""), response.read())
                except urllib.error.HTTPError as error:
                    answer = error.read().decode(errors="replace")
                    status, message, details = route.model_error(name, error.code, answer)
                    self._error(status, "ModelError", message, **details)
                except (TimeoutError, socket.timeout):
                    self._timed_out(name)
                except urllib.error.URLError as error:
                    if isinstance(error.reason, (TimeoutError, socket.timeout)):
                        return self._timed_out(name)
                    if isinstance(error.reason, ConnectionRefusedError):  # no container: being replaced
                        return self._error(503, "ServiceUnavailable", UNAVAILABLE)
                    self._lost(name, error.reason)
                except ConnectionError as error:
                    self._lost(name, error)

            def _lost(self, name: str, cause) -> None:
                # the container went away with the request (SageMaker: ModelError, original status 0)
                status, message, details = route.model_error(name, 0, f"{NO_RESPONSE} ({cause})")
                self._error(status, "ModelError", message, **details)

            def _timed_out(self, name: str) -> None:
                # SageMaker reports the timeout as a server error with status 0
                status, message, details = route.model_error(name, 0, TIMED_OUT)
                self._error(status, "ModelError", message, **details)

            def _drain(self, length: int) -> None:
                while length > 0:
                    chunk = self.rfile.read(min(length, _DRAIN_CHUNK))
                    if not chunk:
                        return
                    length -= len(chunk)

            def _reply(self, status: int, content_type: str, body: bytes, error_type: str = "") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if error_type:
                    self.send_header("x-amzn-ErrorType", error_type)
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, error_type: str, message: str, **details) -> None:
                body = json.dumps({"message": message, **details}).encode()
                self._reply(status, "application/json", body, error_type)

        return Handler


def pipeline_failure(failure: ContainerFailed) -> str:
    """The message of a serial pipeline's ModelError: the container's own answer, or SageMaker's words for
    a container that did not answer in time or went away."""
    if failure.timed_out:
        return TIMED_OUT.replace("container primary", f"container {failure.container}")
    return str(failure) if failure.status else f"{NO_RESPONSE.replace('primary', failure.container)} ({failure})"
