"""What the local endpoint route and the hosts behind it share: one invocation's answer or its refusal.

A host (a multi-model host, a serial pipeline) answers an ``Answer`` or raises an
``InvocationError`` with the status and error type SageMaker's runtime answers; the route
passes both on. On a multi-model endpoint ``TARGET_HEADER`` names the archive a request is for.
"""
from __future__ import annotations

from dataclasses import dataclass

TARGET_HEADER = "X-Amzn-SageMaker-Target-Model"


class InvocationError(Exception):
    """A request the host refuses; ``status`` and ``error_type`` are what the runtime answers."""

    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status, self.error_type = status, error_type


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
