"""A local stand-in for the SageMaker runtime route ``POST /endpoints/<name>/invocations``.

boto3's ``sagemaker-runtime`` client, given ``endpoint_url`` of this route, sends exactly
the request it would send to AWS; the route hands body and content type to a
tritonserver started the way SageMaker's Triton container starts it, and returns the
container's answer. Like the real service, an error from the container comes back as a
``ModelError`` (HTTP 424) carrying the container's status and message.
"""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from local_server.server import free_port

ROUTE_TIMEOUT_S = 120


class EndpointRoute:
    """Serves ``/endpoints/<name>/invocations`` for each name -> container base URL."""

    def __init__(self, endpoints: dict[str, str], port: int | None = None, async_handler=None):
        """``async_handler(name, headers) -> (status, headers, body)`` serves ``/async-invocations``."""
        self.endpoints = dict(endpoints)
        self.async_handler = async_handler
        self.requests_seen = 0
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

    def _handler(self):
        endpoints, route = self.endpoints, self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test and benchmark output clean
                pass

            def do_POST(self) -> None:
                route.requests_seen += 1
                parts = self.path.strip("/").split("/")
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if len(parts) != 3 or parts[0] != "endpoints" or parts[2] not in ("invocations", "async-invocations"):
                    return self._error(404, "UnknownOperationException", f"no route for {self.path}")
                if parts[1] not in endpoints:
                    return self._error(400, "ValidationError", f"Endpoint {parts[1]} not found.")
                if parts[2] == "async-invocations":
                    if route.async_handler is None:
                        return self._error(400, "ValidationError", f"Endpoint {parts[1]} is not asynchronous.")
                    status, headers, answer = route.async_handler(parts[1], self.headers)
                    self.send_response(status)
                    for key, value in {**headers, "Content-Length": str(len(answer))}.items():
                        self.send_header(key, value)
                    self.end_headers()
                    return self.wfile.write(answer)
                request = urllib.request.Request(f"{endpoints[parts[1]]}/invocations", data=body, method="POST",
                                                 headers={"Content-Type": self.headers.get("Content-Type", "")})
                try:
                    with urllib.request.urlopen(request, timeout=ROUTE_TIMEOUT_S) as response:
                        self._reply(200, response.headers.get("Content-Type", ""), response.read())
                except urllib.error.HTTPError as error:
                    text = error.read().decode(errors="replace")
                    self._error(424, "ModelError", f"Received client error ({error.code}) from primary with "
                                f"message \"{text}\".", OriginalStatusCode=error.code, OriginalMessage=text)
                except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                    self._error(424, "ModelError", f"the model container did not answer: {error}")

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
