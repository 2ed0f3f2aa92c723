"""SageMaker's part of a serial inference pipeline: the containers in order, one response the next request.

A model created with ``Containers=[...]`` and ``InferenceExecutionConfig={"Mode": "Serial"}`` runs
all its containers on each instance; SageMaker sends the client's request to the first and each
container's response, as the request, to the next, and returns the last one's response
(docs.aws.amazon.com/sagemaker/latest/dg/inference-pipelines.html). Each request carries the
previous answer's body and ``Content-Type`` and the client's ``Accept``. The first container
that answers 4xx/5xx, or does not answer within what is left of the invocation's 60 s, ends
the invocation: the endpoint route turns that into SageMaker's ModelError naming the container.
"""
from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from local_server.invocation import Answer


class ContainerFailed(Exception):
    """A container of the pipeline answered 4xx/5xx (``status``), timed out or went away (``status`` 0)."""

    def __init__(self, container: str, status: int, message: str, timed_out: bool = False):
        super().__init__(message)
        self.container, self.status, self.timed_out = container, status, timed_out


@dataclass
class PipelineContainer:
    hostname: str  # the model's ContainerHostname: what SageMaker's errors and log streams name
    url: str  # its /invocations base
    process: object = None  # what to stop with the pipeline (a TritonServer or HandlerContainer)


class SerialPipeline:
    def __init__(self, containers: list[PipelineContainer]):
        self.containers = containers

    def invoke(self, body: bytes, content_type: str, accept: str, timeout_s: float) -> Answer:
        deadline = time.monotonic() + timeout_s
        for container in self.containers:
            body, content_type = self._send(container, body, content_type, accept, deadline)
        return Answer(200, content_type, body)

    @staticmethod
    def _send(container: PipelineContainer, body: bytes, content_type: str, accept: str,
              deadline: float) -> tuple[bytes, str]:
        headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
        request = urllib.request.Request(f"{container.url}/invocations", data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=max(deadline - time.monotonic(), 0.001)) as response:
                return response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            raise ContainerFailed(container.hostname, error.code, error.read().decode(errors="replace")) from None
        except (TimeoutError, socket.timeout):
            raise ContainerFailed(container.hostname, 0, "timed out", timed_out=True) from None
        except urllib.error.URLError as error:
            timed_out = isinstance(error.reason, (TimeoutError, socket.timeout))
            raise ContainerFailed(container.hostname, 0, str(error.reason), timed_out=timed_out) from None
        except ConnectionError as error:
            raise ContainerFailed(container.hostname, 0, str(error)) from None

    def stop(self) -> None:
        for container in self.containers:
            if container.process is not None:
                container.process.stop()
