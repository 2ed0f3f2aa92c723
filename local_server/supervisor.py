"""Replace a container whose ``/ping`` fails, as SageMaker replaces such an instance.

SageMaker health-checks every instance with ``GET /ping`` and replaces one that stops
answering it (an endpoint "did not pass the ping health check" is how it reports a
container that never answers: github.com/aws/sagemaker-python-sdk/issues/4115 shows the
same check failing an endpoint that had been serving). ``Supervisor`` plays that part for
one ``TritonServer``: it pings it, and when the process is gone or ``failed_pings``
pings in a row fail, it kills what is left of it and starts it again on the same ports,
with a new log file (SageMaker starts a new log stream for a new instance).

What a client sees meanwhile (SageMaker's runtime API, API_runtime_InvokeEndpoint,
"Errors"): a request in flight when the container died gets ``ModelError`` with the
original status 0, SageMaker's "could not get a response" answer
(github.com/aws/amazon-sagemaker-examples/issues/2815 quotes it); a request arriving
while no instance is in service gets ``ServiceUnavailable`` (HTTP 503, "The service is
unavailable. Try your call again."); ``local_server.endpoint_route`` answers both.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

from local_server.errors import ServerError
from local_server.server import TritonServer

PING_INTERVAL_S = 1.0
FAILED_PINGS = 3  # in a row, before the container is replaced: one slow answer under load is not a death
PING_TIMEOUT_S = 2.0
RESTART_BACKOFF_S = 5.0  # between attempts when the replacement itself fails to start


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


@dataclass
class Supervisor:
    """Pings ``server`` and restarts it when it dies or stops answering; ``say`` gets one line per event."""

    server: TritonServer
    name: str = "container"
    interval_s: float = PING_INTERVAL_S
    failed_pings: int = FAILED_PINGS
    say: Callable[[str], None] = _stderr
    restarts: int = 0
    events: list[str] = field(default_factory=list)
    _serving: threading.Condition = field(default_factory=threading.Condition, init=False)
    _down: bool = field(default=False, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def start(self) -> "Supervisor":
        self._thread = threading.Thread(target=self._watch, name=f"supervisor-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the container on purpose: the watch ends instead of restarting it."""
        self.server.stop()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + PING_TIMEOUT_S + 1)

    @property
    def down(self) -> bool:
        return self._down

    def wait_restarted(self, seen_restarts: int, timeout_s: float) -> bool:
        """Wait until a restart after ``seen_restarts`` has brought the container back; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._serving:
            while self.restarts <= seen_restarts or self._down:
                left = deadline - time.monotonic()
                if left <= 0 or self.server.stopped_on_purpose:
                    return False
                self._serving.wait(left)
        return True

    # -- the watch -------------------------------------------------------------------
    def _watch(self) -> None:
        failures = 0
        while not self.server.stopped_on_purpose:
            time.sleep(self.interval_s)
            problem = self.health_problem()
            failures = failures + 1 if problem else 0
            if problem and (failures >= self.failed_pings or not self.server.is_running()):
                self._replace(problem)
                failures = 0

    def health_problem(self) -> str | None:
        """None when /ping answers 200; otherwise why not."""
        process = self.server.process
        if process is not None and process.poll() is not None:
            return f"tritonserver (pid {process.pid}) {exit_reason(process.returncode)}"
        try:
            with urllib.request.urlopen(self.server.health_url(), timeout=PING_TIMEOUT_S) as response:
                return None if response.status == 200 else f"/ping answered {response.status}"
        except urllib.error.HTTPError as error:
            return f"/ping answered {error.code}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            return f"/ping failed ({getattr(error, 'reason', error)})"

    def _replace(self, problem: str) -> None:
        if self.server.stopped_on_purpose:
            return
        with self._serving:
            self._down = True
        self._tell(f"{self.name}: {problem}; /ping fails, replacing the container as SageMaker replaces "
                   "an instance that fails its health check")
        began = time.monotonic()
        while not self.server.stopped_on_purpose:
            self._kill_leftovers()
            try:
                self.server.start_again()
                break
            except ServerError as error:
                first_line = str(error).splitlines()[0]
                self._tell(f"{self.name}: the replacement did not start ({first_line}); trying again")
                time.sleep(RESTART_BACKOFF_S)
        if self.server.stopped_on_purpose:  # stopped while restarting: leave nothing running
            self.server.stop()
            return
        with self._serving:
            self.restarts += 1
            self._down = False
            self._serving.notify_all()
        self._tell(f"{self.name}: back in service (pid {self.server.process.pid}) after "
                   f"{time.monotonic() - began:.1f} s, restart {self.restarts}")

    def _kill_leftovers(self) -> None:
        """A hung server, or python-backend stubs of a dead one, still hold its ports and memory."""
        process = self.server.process
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: start_new_session=True
        except ProcessLookupError:
            pass
        process.wait(timeout=10)

    def _tell(self, line: str) -> None:
        self.events.append(line)
        self.say(line)


def resend_after_restart(send: Callable[[], object], supervisor: Supervisor | None, timeout_s: float,
                         lost: tuple[type[BaseException], ...]):
    """``send()``; if it fails with one of ``lost`` (the container died under it), wait up to
    ``timeout_s`` for the supervisor to bring the container back and send once more.

    The second failure, or no restart in time, raises ``ContainerLost``: the caller writes
    it where the client looks (an async request's S3 failure path), so nothing is lost silently.
    """
    seen = supervisor.restarts if supervisor else 0
    try:
        return send()
    except lost as error:
        if supervisor is None or not supervisor.wait_restarted(seen, timeout_s):
            raise ContainerLost(f"the container died while processing the request ({error}) and was not "
                                f"back within {timeout_s:.0f} s") from None
    try:
        return send()
    except lost as error:
        raise ContainerLost(f"the request failed again on the restarted container ({error})") from None


class ContainerLost(RuntimeError):
    """A request whose container died, and that could not be answered by its replacement."""
