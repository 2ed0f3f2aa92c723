"""Invoking an endpoint's runtime: a multi-model endpoint's cold archive is retried, not failed.

SageMaker answers a request for an archive that is still downloading or loading with HTTP 429
``ModelNotReadyException`` and expects the caller to "wait and try your request again"
(InvokeEndpoint API reference, Errors). botocore's retry modes do not count that code as
retryable, so ``invoke_until_ready`` does: a bounded number of attempts with exponential backoff.
"""
from __future__ import annotations

import time
from typing import TypeVar
from collections.abc import Callable

import botocore.exceptions

NOT_READY = "ModelNotReadyException"
ATTEMPTS = 8
FIRST_WAIT_S = 1.0
LONGEST_WAIT_S = 30.0

Answer = TypeVar("Answer")


def not_ready(error: Exception) -> bool:
    return (isinstance(error, botocore.exceptions.ClientError)
            and error.response.get("Error", {}).get("Code") == NOT_READY)


def backoff_s(attempt: int, first_wait_s: float = FIRST_WAIT_S, longest_wait_s: float = LONGEST_WAIT_S) -> float:
    """The pause after failed attempt number ``attempt`` (0, 1, ...): doubling, capped."""
    return min(longest_wait_s, first_wait_s * 2 ** attempt)


def invoke_until_ready(invoke: Callable[[], Answer], attempts: int = ATTEMPTS, first_wait_s: float = FIRST_WAIT_S,
                       sleep: Callable[[float], None] = time.sleep) -> Answer:
    """``invoke()`` again after each ModelNotReadyException, up to ``attempts`` calls; any other error, or the
    last attempt's, is raised as it is."""
    for attempt in range(attempts - 1):
        try:
            return invoke()
        except botocore.exceptions.ClientError as error:
            if not not_ready(error):
                raise
        sleep(backoff_s(attempt, first_wait_s))
    return invoke()
