"""A bounded load generator: closed-loop concurrency steps and open-loop request-rate steps.

Each step warms up, then measures in windows until the last three agree (throughput and
p50 within 10% of their mean) or the window budget is spent. In rate mode, latency runs
from each request's *scheduled* send time, so a server that falls behind shows its
queueing instead of hiding it. Every loop is bounded in count and time; a step stops
early when the server stops answering (all requests of a window failed, or none
finished within the request timeout) and says so.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

STABLE_WINDOWS = 3
STABILITY_TOLERANCE = 0.10


class StepFailed(RuntimeError):
    """A server died or stalled during a step."""


@dataclass(frozen=True)
class StepSettings:
    warmup_s: float = 2.0
    window_s: float = 3.0
    max_windows: int = 8
    request_timeout_s: float = 30.0


@dataclass
class Sample:
    started: float  # when the request was (scheduled to be) sent
    finished: float
    ok: bool
    error: str = ""

    @property
    def latency(self) -> float:
        return self.finished - self.started


@dataclass
class StepResult:
    mode: str  # "concurrency" or "rate"
    load: float  # concurrency, or requests per second
    throughput: float = 0.0  # successful requests per second over the reported windows
    mean_ms: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    errors: int = 0
    windows: int = 0
    stable: bool = False
    failure: str = ""  # why the step stopped early, if it did
    first_error: str = ""
    window_throughputs: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000
    if ms.size == 0:
        return {"mean_ms": 0.0, "p50_ms": 0.0, "p90_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}
    return {"mean_ms": float(ms.mean()), **{f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 95, 99)}}


def is_stable(windows: list[tuple[float, float]]) -> bool:
    """The last three (throughput, p50) windows each lie within 10% of their mean."""
    if len(windows) < STABLE_WINDOWS:
        return False
    for values in zip(*windows[-STABLE_WINDOWS:]):
        mean = float(np.mean(values))
        if mean <= 0 or any(abs(v - mean) > STABILITY_TOLERANCE * mean for v in values):
            return False
    return True


class _Recorder:
    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.lock = threading.Lock()

    def record(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)

    def finished_between(self, start: float, end: float) -> list[Sample]:
        with self.lock:
            return [s for s in self.samples if start <= s.finished < end]


def _timed(send: Callable[[], object], started: float, recorder: _Recorder) -> None:
    try:
        send()
        recorder.record(Sample(started, time.perf_counter(), True))
    except Exception as error:  # any failure of the target counts as an error sample
        recorder.record(Sample(started, time.perf_counter(), False, f"{type(error).__name__}: {error}"[:300]))


def _measure(recorder: _Recorder, result: StepResult, settings: StepSettings, stop: threading.Event,
             in_flight_since: Callable[[], float | None]) -> StepResult:
    """Windows after the warm-up, until stable, out of windows, or the server stops answering."""
    time.sleep(settings.warmup_s)
    windows: list[tuple[float, float]] = []
    measured: list[list[Sample]] = []
    start = time.perf_counter()
    for _ in range(settings.max_windows):
        time.sleep(settings.window_s)
        end = time.perf_counter()
        window = recorder.finished_between(start, end)
        start = end
        good = [s for s in window if s.ok]
        measured.append(window)
        oldest = in_flight_since()
        if window and not good:
            result.failure = f"every request of a window failed ({len(window)})"
        elif not window and oldest is not None and end - oldest > settings.request_timeout_s:
            result.failure = f"no answer for {end - oldest:.0f} s (request timeout {settings.request_timeout_s:.0f} s)"
        if result.failure:
            break
        windows.append((len(good) / settings.window_s, percentiles([s.latency for s in good])["p50_ms"]))
        if is_stable(windows):
            result.stable = True
            break
    stop.set()
    reported = [s for window in measured[-STABLE_WINDOWS:] for s in window]
    good = [s for s in reported if s.ok]
    errors = [s for s in reported if not s.ok]
    span = settings.window_s * min(len(measured), STABLE_WINDOWS)
    result.throughput = len(good) / span if span else 0.0
    result.requests, result.errors, result.windows = len(reported), len(errors), len(measured)
    result.first_error = errors[0].error if errors else ""
    result.window_throughputs = [w[0] for w in windows]
    for key, value in percentiles([s.latency for s in good]).items():
        setattr(result, key, value)
    return result


def run_concurrency(send: Callable[[], object], concurrency: int, settings: StepSettings) -> StepResult:
    """Closed loop: ``concurrency`` workers, each sending its next request when the last one returns."""
    recorder, stop = _Recorder(), threading.Event()
    starts: dict[int, float | None] = {}

    def worker(index: int) -> None:
        while not stop.is_set():
            starts[index] = time.perf_counter()
            _timed(send, starts[index], recorder)
            starts[index] = None

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    result = _measure(recorder, StepResult("concurrency", concurrency), settings, stop,
                      lambda: min((t for t in starts.values() if t is not None), default=None))
    for thread in threads:  # bounded: each send has its own timeout
        thread.join(timeout=settings.request_timeout_s + 5)
    return result


def run_rate(send: Callable[[], object], rate: float, settings: StepSettings, max_in_flight: int = 64) -> StepResult:
    """Open loop: requests scheduled every 1/rate s whatever the server does; latency from the schedule."""
    recorder, stop = _Recorder(), threading.Event()
    pending: dict[int, float] = {}
    lock = threading.Lock()

    def job(number: int, scheduled: float) -> None:
        _timed(send, scheduled, recorder)
        with lock:
            pending.pop(number, None)

    def scheduler(pool: ThreadPoolExecutor) -> None:
        begin, number = time.perf_counter(), 0
        while not stop.is_set():
            scheduled = begin + number / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(min(delay, 0.5))
                continue
            with lock:
                pending[number] = scheduled
            pool.submit(job, number, scheduled)
            number += 1

    def oldest_pending() -> float | None:
        with lock:
            return min(pending.values(), default=None)

    with ThreadPoolExecutor(max_workers=max_in_flight) as pool:
        thread = threading.Thread(target=scheduler, args=(pool,), daemon=True)
        thread.start()
        result = _measure(recorder, StepResult("rate", rate), settings, stop, oldest_pending)
        thread.join(timeout=5)
        pool.shutdown(wait=True, cancel_futures=True)
    return result
