"""Overload and soak: what the cpu classification ensemble does at 10x its capacity, and over a
long run, with the guard's admission gate off and on, side by side.

    python -m benchmarks.overload [--duration-s 60] [--factor 10] [--soak-requests 3000] [--out DIR]
                                  [--client-cpus 1]

1. capacity: requests/s served over HTTP binary by a closed loop well inside the queues (a
   first server, on queues sized for the default capacity, the gate off);
2. the queues and the gate are rebuilt for the measured capacity and the budget
   (``capacity_rps`` = what step 1 measured);
3. for the gate off (``admission_rps`` 0 in the guard's config) and then on (the capacity), on
   a fresh server each:
   - overload: an open loop offering ``factor`` x capacity for ``duration`` s: answered
     requests' p50/p99 against the latency budget the queues were built from, how fast the
     excess is refused (the goal: every refusal under 100 ms), goodput as a fraction of the
     capacity (goal >= 90 %), whether the server still answers after, and where the requests
     spent their time per model (Triton's statistics extension, before and after);
   - soak: thousands of requests, one in four bad (not an image, a cut JPEG, a header over the
     guard's pixel limit), with the resident memory of tritonserver and its python-backend
     stubs sampled after a warm-up and at the end (goal: within 10 %).

A real tritonserver on 127.0.0.1 serves a repository built here with the given budget
(``--repository`` reuses one: its configs are rewritten for the measured capacity). With
``--client-cpus`` the load generator runs on those CPUs and the server on the others, in
every phase. Writes overload.json and overload.md to --out.

Goodput counts the requests answered within the latency budget, over the time from the first
scheduled request to the last answer: every answer the server gave under the overload, and the
drain after the window it took to give them (an answer after the window is not credited to a
window it did not fit in).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil
import requests

from benchmarks import targets
from benchmarks.load import StepSettings, percentiles, run_concurrency
from benchmarks.report import _table
from benchmarks.timing import ROOT, machine_facts
from builders import ensemble_dali_inception
from builders.config import parse, render
from builders.declaration import BuildOptions
from builders.load_shedding import (
    DEFAULT_CAPACITY_RPS,
    DEFAULT_LATENCY_BUDGET_S,
    QUEUE_SHARE,
    ServingOptionError,
    admission_rate,
)
from builders.repository import build_repository
from clients.protocols import RequestError, Route, ServerOverloaded, server_route
from local_server import TritonServer

# the ensemble and its steps (guard, DALI, classifier): all the overload needs to build
CLASSIFICATION = (*(step.model_name for step in ensemble_dali_inception.declare(BuildOptions(target="cpu")).steps),
                  ensemble_dali_inception.NAME)
GUARD = ensemble_dali_inception.GUARD.name
GATES = ("off", "on")  # measured in this order, each on a server of its own
REFUSAL_GOAL_S = 0.100
GOODPUT_GOAL = 0.90
MEMORY_GOAL = 0.10
CAPACITY_CONCURRENCY = 8
DEFAULT_FACTOR = 10.0
DEFAULT_WORKERS = 256  # open-loop threads, one tritonclient each (its HTTP client is not thread-safe)
# A soak thread refused pauses before its next request: the soak's closed loop runs at about the
# capacity, which the gate admits, and without a pause a refused thread would spend the soak's
# requests in milliseconds on refusals instead of on the pipeline whose memory it watches.
SOAK_BACKOFF_S = 0.5


STAT_KINDS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


class NoQueuePolicy(RuntimeError):
    """The repository was built without queue policies (before load shedding)."""


class NoCapacity(RuntimeError):
    """The closed loop got no answer: there is no capacity to size the queues for."""


@dataclass
class Outcome:
    scheduled: float
    sent: float
    finished: float
    kind: str  # "answered", "refused" (the server shed it), "error"
    error: str = ""


def classification_options(budget_s: float, capacity_rps: float, configs_only: bool = False) -> BuildOptions:
    return BuildOptions(target="cpu", models=CLASSIFICATION, latency_budget_s=budget_s, capacity_rps=capacity_rps,
                        configs_only=configs_only)


def classification_repository(path: Path, budget_s: float) -> Path:
    build_repository(path, classification_options(budget_s, DEFAULT_CAPACITY_RPS))
    return path


def resize_queues(repository: Path, budget_s: float, capacity_rps: float) -> None:
    """Rewrite the classification configs of ``repository`` for ``capacity_rps`` (the builder's
    derivation, builders/load_shedding.py); the models' files stay as they are."""
    with tempfile.TemporaryDirectory(prefix="overload-configs-") as configs:
        build_repository(Path(configs), classification_options(budget_s, capacity_rps, configs_only=True))
        for name in CLASSIFICATION:
            shutil.copy2(Path(configs) / name / "config.pbtxt", repository / name / "config.pbtxt")


def set_gate(repository: Path, rate: float) -> None:
    """The guard's ``admission_rps`` (0: no gate), as a deployment changes it without a rebuild."""
    path = repository / GUARD / "config.pbtxt"
    config = parse(path.read_text())
    config.parameters["admission_rps"].string_value = f"{rate:g}"
    path.write_text(render(config))


def gate_rate(repository: Path) -> float:
    return float(parse((repository / GUARD / "config.pbtxt").read_text()).parameters["admission_rps"].string_value)


@contextmanager
def served(repository: Path, log_path: Path, client_cpus: set[int]):
    """A server; with ``client_cpus``, the server (started from this thread, whose CPUs it inherits)
    on the other CPUs, and this thread, with the load threads it starts after, on those."""
    if client_cpus:
        os.sched_setaffinity(0, set(range(os.cpu_count())) - client_cpus)
    with TritonServer(repository, log_path=log_path) as server:
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)
        yield server


def queue_policies(repository: Path) -> dict[str, dict]:
    """Model -> its queue's size and timeout, as the served configs say."""
    policies = {}
    for name in CLASSIFICATION:
        config = parse((repository / name / "config.pbtxt").read_text())
        if config.HasField("dynamic_batching"):
            policy = config.dynamic_batching.default_queue_policy
            policies[name] = {"max_queue_size": policy.max_queue_size,
                              "timeout_ms": policy.default_timeout_microseconds / 1000}
    return policies


def configured_budget_s(repository: Path) -> float:
    """The budget the ensemble's queues were derived from: their timeouts add up to its queue share."""
    ensemble = parse((repository / ensemble_dali_inception.NAME / "config.pbtxt").read_text())
    timeouts = [parse((repository / step.model_name / "config.pbtxt").read_text())
                .dynamic_batching.default_queue_policy.default_timeout_microseconds
                for step in ensemble.ensemble_scheduling.step]
    if not all(timeouts):
        raise NoQueuePolicy(f"{repository} has no queue policy on the ensemble's steps: rebuild it with "
                            "python -m builders --target cpu")
    return sum(timeouts) / 1e6 / QUEUE_SHARE


def timed(send, scheduled: float) -> Outcome:
    sent = time.perf_counter()
    try:
        send()
        return Outcome(scheduled, sent, time.perf_counter(), "answered")
    except ServerOverloaded as error:
        return Outcome(scheduled, sent, time.perf_counter(), "refused", str(error)[:200])
    except (RequestError, OSError) as error:
        return Outcome(scheduled, sent, time.perf_counter(), "error", str(error)[:200])


def open_loop(send, rate: float, duration_s: float, workers: int) -> list[Outcome]:
    """Requests scheduled every 1/rate s for duration_s, whatever the server answers."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def job(scheduled: float) -> None:
        outcome = timed(send, scheduled)
        with lock:
            outcomes.append(outcome)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        begin = time.perf_counter()
        for number in range(int(rate * duration_s)):
            scheduled = begin + number / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(job, scheduled)
    return outcomes


def overload_figures(outcomes: list[Outcome], capacity: float, rate: float, duration_s: float,
                     budget_s: float) -> dict:
    answered = [o.finished - o.sent for o in outcomes if o.kind == "answered"]
    refused = [o.finished - o.sent for o in outcomes if o.kind == "refused"]
    errors = [o for o in outcomes if o.kind == "error"]
    # within the budget, over the time from the first request scheduled to the last answer given
    # (outcomes are listed in the order they finished, not in the order they were sent)
    begin = min((o.scheduled for o in outcomes), default=0.0)
    span = max([duration_s, *(o.finished - begin for o in outcomes)])
    goodput = sum(seconds <= budget_s for seconds in answered) / span
    answered_ms, refused_ms = percentiles(answered), percentiles(refused)
    return {
        "offered_rps": rate, "duration_s": duration_s, "requests": len(outcomes),
        "answered": len(answered), "refused": len(refused), "other_errors": len(errors),
        "first_other_error": errors[0].error if errors else "",
        "answered_p50_ms": answered_ms["p50_ms"], "answered_p99_ms": answered_ms["p99_ms"],
        "answered_max_ms": max(answered, default=0.0) * 1000,
        "answered_p99_within_budget": answered_ms["p99_ms"] <= budget_s * 1000,
        "refusal_p50_ms": refused_ms["p50_ms"], "refusal_p99_ms": refused_ms["p99_ms"],
        "refusal_max_ms": max(refused, default=0.0) * 1000,
        "refused_under_100ms": sum(seconds < REFUSAL_GOAL_S for seconds in refused) / len(refused) if refused else None,
        "goodput_rps": goodput, "goodput_of_capacity": goodput / capacity if capacity else 0.0,
        "goodput_span_s": span,
        # how late the load generator sent: a saturated client would hide the server's behaviour
        "send_lag_p99_ms": percentiles([o.sent - o.scheduled for o in outcomes])["p99_ms"],
    }


def oversized_png(side: int = 20000) -> bytes:
    """A PNG signature and IHDR claiming side x side pixels, nothing after: the guard refuses it unread."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def soak_sends(route: Route, image: bytes) -> list:
    """Three good requests, then one bad, of each kind in turn."""
    bad = [b"this is not an image", image[: len(image) // 3], oversized_png()]
    good = targets.ensemble_request(route, image)
    return [good, good, good, targets.ensemble_request(route, bad[0]), good, good, good,
            targets.ensemble_request(route, bad[1]), good, good, good, targets.ensemble_request(route, bad[2])]


def resident_mb(server: TritonServer) -> dict[str, float]:
    """RSS of tritonserver and of its children (the python-backend stubs), in MiB."""
    process = psutil.Process(server.process.pid)
    children = process.children(recursive=True)
    main = process.memory_info().rss / 2**20
    stubs = sum(child.memory_info().rss for child in children) / 2**20
    return {"tritonserver_mb": main, "stubs_mb": stubs, "total_mb": main + stubs, "processes": 1 + len(children)}


def run_requests(sends: list, count: int, threads: int) -> dict[str, int]:
    """``count`` requests cycling through ``sends`` from ``threads`` closed-loop threads."""
    counts = {"answered": 0, "refused": 0, "error": 0}
    lock = threading.Lock()
    numbers = iter(range(count))

    def worker() -> None:
        for number in numbers:  # shared iterator: each number once (next() holds the GIL)
            outcome = timed(sends[number % len(sends)], time.perf_counter())
            with lock:
                counts[outcome.kind] += 1
            if outcome.kind == "refused":  # as a client told to retry later with backoff does
                time.sleep(SOAK_BACKOFF_S)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return counts


def soak(server: TritonServer, image: bytes, requests_: int, warmup: int, threads: int = 4) -> dict:
    sends = soak_sends(server_route(server, "http-binary"), image)
    run_requests(sends, warmup, threads)
    after_warmup = resident_mb(server)
    started = time.perf_counter()
    counts = run_requests(sends, requests_, threads)
    at_end = resident_mb(server)
    growth = (at_end["total_mb"] - after_warmup["total_mb"]) / after_warmup["total_mb"]
    return {"requests": requests_, "warmup_requests": warmup, "bad_fraction": 3 / len(sends),
            "seconds": time.perf_counter() - started, "outcomes": counts, "rss_after_warmup": after_warmup,
            "rss_at_end": at_end, "rss_growth": growth, "rss_within_goal": abs(growth) <= MEMORY_GOAL}


def still_serving(server: TritonServer, image: bytes, tries: int = 10) -> bool:
    """Whether the server answers a good request; one refused as overload is sent again after a
    backoff (the queues drain, and the gate's bucket refills, in well under a second each)."""
    send = targets.ensemble_request(server_route(server, "http-binary"), image)
    for _ in range(tries):
        try:
            send()
            return server.is_running()
        except ServerOverloaded:
            time.sleep(SOAK_BACKOFF_S)
        except RequestError:
            return False
    return False


def stats_snapshot(server: TritonServer) -> dict[str, dict[str, int]]:
    """Cumulative counts and nanoseconds per classification model (GET /v2/models/<m>/stats)."""
    snapshot = {}
    for name in CLASSIFICATION:
        answer = requests.get(f"http://{server.http_url}/v2/models/{name}/stats", timeout=30)
        answer.raise_for_status()
        (model,) = answer.json()["model_stats"]
        inference = model["inference_stats"]
        snapshot[name] = {"executions": model["execution_count"], "inferences": model["inference_count"],
                          **{f"{kind}_count": inference[kind]["count"] for kind in STAT_KINDS},
                          **{f"{kind}_ns": inference[kind]["ns"] for kind in STAT_KINDS}}
    return snapshot


def mean_ms(delta: dict[str, int], kind: str) -> float:
    return delta[f"{kind}_ns"] / delta[f"{kind}_count"] / 1e6 if delta[f"{kind}_count"] else 0.0


def where_time_went(before: dict, after: dict) -> dict[str, dict]:
    """Per model, between two snapshots: requests answered and failed, the mean batch, and the
    mean ms a request spent queued, copying inputs, executing, copying outputs, and in all."""
    figures = {}
    for name, end in after.items():
        delta = {key: value - before[name][key] for key, value in end.items()}
        figures[name] = {"answered": delta["success_count"], "failed": delta["fail_count"],
                         "mean_batch": delta["inferences"] / delta["executions"] if delta["executions"] else 0.0,
                         **{f"{kind}_ms": mean_ms(delta, kind) for kind in STAT_KINDS}}
    return figures


def measure_capacity(repository: Path, image: bytes, log_path: Path | None, client_cpus: set[int]) -> dict:
    """Closed-loop requests/s on a server of its own, before the queues are sized for it."""
    with served(repository, log_path, client_cpus) as server:
        send = targets.ensemble_request(server_route(server, "http-binary"), image)
        step = run_concurrency(send, CAPACITY_CONCURRENCY, StepSettings(2.0, 3.0, 6, 30.0))
    if step.throughput <= 0:
        raise NoCapacity(f"the capacity step answered nothing ({step.failure or step.first_error}); "
                         f"see {log_path}")
    return {"concurrency": CAPACITY_CONCURRENCY, "rps": step.throughput, "p50_ms": step.p50_ms,
            "p99_ms": step.p99_ms, "errors": step.errors, "queues": queue_policies(repository)}


def overload_and_soak(server: TritonServer, image: bytes, capacity: float, budget_s: float, run: dict) -> dict:
    send = targets.ensemble_request(server_route(server, "http-binary"), image)
    rate = run["factor"] * capacity
    before = stats_snapshot(server)
    outcomes = open_loop(send, rate, run["duration_s"], run["workers"])
    overload = overload_figures(outcomes, capacity, rate, run["duration_s"], budget_s)
    overload["where_time_went"] = where_time_went(before, stats_snapshot(server))
    overload["server_alive_after"] = still_serving(server, image)
    soaked = soak(server, image, run["soak_requests"], warmup=max(100, run["soak_requests"] // 20))
    soaked["server_alive_after"] = still_serving(server, image)
    return {"overload": overload, "soak": soaked}


def measure_gate(repository: Path, image: bytes, gate: str, capacity: float, budget_s: float, run: dict,
                 logs: Path) -> dict:
    """Overload and soak on a fresh server, the guard's gate off, or on at the capacity."""
    set_gate(repository, admission_rate(gate == "on", capacity))
    with served(repository, logs / f"tritonserver-gate-{gate}.log", run["client_cpus"]) as server:
        return {"admission_rps": gate_rate(repository), **overload_and_soak(server, image, capacity, budget_s, run)}


def measure(repository: Path, image: bytes, budget_s: float, run: dict, logs: Path) -> dict:
    """Capacity on one server (gate off); then the queues and the gate rebuilt for that capacity and
    the budget, and the overload and soak with the gate off and on, on a fresh server each.
    ``run``: factor, duration_s, workers, soak_requests, client_cpus."""
    configured_budget_s(repository)  # a repository from before load shedding is refused here
    resize_queues(repository, budget_s, DEFAULT_CAPACITY_RPS)  # room for the closed loop, whatever it held
    set_gate(repository, 0.0)
    capacity = measure_capacity(repository, image, logs / "tritonserver-capacity.log", run["client_cpus"])
    resize_queues(repository, budget_s, capacity["rps"])
    built = {"capacity_rps": capacity["rps"], "latency_budget_s": configured_budget_s(repository),
             "queues": queue_policies(repository)}
    gates = {gate: measure_gate(repository, image, gate, capacity["rps"], built["latency_budget_s"], run, logs)
             for gate in GATES}
    return {**machine_facts(), "latency_budget_s": built["latency_budget_s"], "factor": run["factor"],
            "client_cpus": sorted(run["client_cpus"]), "capacity": capacity, "queues_built_for": built,
            "gates": gates}


def _verdict(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "NO")


def queues_line(queues: dict[str, dict]) -> str:
    return ", ".join(f"{name} {policy['max_queue_size']} / {policy['timeout_ms']:.0f} ms"
                     for name, policy in queues.items())


def where_rows(where: dict[str, dict]) -> list[list]:
    return [[name, figures["answered"], figures["failed"], f"{figures['mean_batch']:.1f}",
             *(f"{figures[f'{kind}_ms']:.0f}" for kind in ("queue", "compute_input", "compute_infer",
                                                          "compute_output", "success"))]
            for name, figures in where.items()]


def where_section(gate: str, overload: dict) -> list[str]:
    return [f"### Where the requests spent their time during the overload, gate {gate}", "",
            ("Triton's statistics extension (`/v2/models/<m>/stats`), after minus before the overload; "
            "ms are means per request (for the ensemble: its whole time inside Triton)."), "",
            *_table(["model", "answered", "failed", "mean batch", "queue ms", "compute input ms",
                     "compute infer ms", "compute output ms", "in the model ms"],
                    where_rows(overload["where_time_went"]))]


def measured_rows(measured: dict) -> list[tuple[str, str, bool | None]]:
    """(figure, value, goal met or None) for one gate's overload and soak, in the table's order."""
    overload, soaked = measured["overload"], measured["soak"]
    refused_fast = overload["refused_under_100ms"]
    return [
        ("gate (guard's admission_rps)", f"{measured['admission_rps']:g} req/s" if measured["admission_rps"]
         else "off", None),
        ("answered p50 / p99", f"{overload['answered_p50_ms']:.0f} / {overload['answered_p99_ms']:.0f} ms",
         overload["answered_p99_within_budget"]),
        ("refusals: p50 / p99 / max", (f"{overload['refusal_p50_ms']:.1f} / {overload['refusal_p99_ms']:.1f} / "
         f"{overload['refusal_max_ms']:.1f} ms"), None if refused_fast is None else refused_fast == 1.0),
        ("refused under 100 ms", "n/a" if refused_fast is None else f"{refused_fast:.1%}", None),
        ("answered / refused / other errors", (f"{overload['answered']} / {overload['refused']} / "
         f"{overload['other_errors']}"), None),
        ("goodput (answered within the budget / first send to last answer)",
         (f"{overload['goodput_rps']:.1f} req/s over {overload['goodput_span_s']:.1f} s = "
          f"{overload['goodput_of_capacity']:.0%} of capacity"), overload["goodput_of_capacity"] >= GOODPUT_GOAL),
        ("load generator send lag p99", f"{overload['send_lag_p99_ms']:.0f} ms", None),
        ("server alive after overload", "", overload["server_alive_after"]),
        (f"soak: {soaked['requests']} requests, {soaked['bad_fraction']:.0%} bad",
         " / ".join(f"{kind} {count}" for kind, count in soaked["outcomes"].items()), None),
        ("soak: RSS after warm-up -> end (server + stubs)", (f"{soaked['rss_after_warmup']['total_mb']:.0f} -> "
         f"{soaked['rss_at_end']['total_mb']:.0f} MiB ({soaked['rss_growth']:+.1%})"), soaked["rss_within_goal"]),
        ("server alive after soak", "", soaked["server_alive_after"]),
    ]


GOALS = {"answered p50 / p99": "p99 <= budget", "refusals: p50 / p99 / max": "every refusal < 100 ms",
         "goodput (answered within the budget / first send to last answer)": ">= 90 %",
         "server alive after overload": "alive", "soak: RSS after warm-up -> end (server + stubs)": "within 10 %",
         "server alive after soak": "alive"}


def side_by_side(gates: dict[str, dict]) -> list[list]:
    """One row per figure: its value with each gate, its goal, and whether each met it."""
    rows = []
    for cells in zip(*(measured_rows(gates[gate]) for gate in GATES)):
        figure = cells[0][0]
        verdicts = " / ".join(_verdict(met) for _, _, met in cells) if figure in GOALS else ""
        rows.append([figure, *(value for _, value, _ in cells), GOALS.get(figure, ""), verdicts])
    return rows


def markdown(results: dict) -> list[str]:
    budget, built, first = results["latency_budget_s"], results["queues_built_for"], results["gates"][GATES[0]]
    header = [["capacity (closed loop, concurrency 8)", f"{results['capacity']['rps']:.1f} req/s"],
              ["queues built for (size / timeout)", (f"{built['capacity_rps']:.1f} req/s, {budget:g} s budget: "
               f"{queues_line(built['queues'])}")],
              [f"offered for {first['overload']['duration_s']:g} s", (f"{first['overload']['offered_rps']:.1f} req/s "
               f"({results['factor']:g}x)")]]
    pinned = (f"the load generator pinned to CPUs {results['client_cpus']}, the server to the others"
              if results["client_cpus"] else "the load generator on the same CPUs as the server")
    return ["## Overload and soak, admission gate off and on", "",
            (f"Measured {results['date']} on {results['cpus']} CPUs, {pinned}; cpu classification ensemble over "
             f"HTTP binary; queues derived from a {budget:g} s latency budget and the capacity measured first "
             f"(the capacity step ran with the gate off, on queues sized for the default {DEFAULT_CAPACITY_RPS:g} "
             f"req/s: {queues_line(results['capacity']['queues'])}). Each gate on a fresh server, off first."), "",
            *_table(["figure", "measured"], header),
            *_table(["figure", *(f"gate {gate}" for gate in GATES), "goal", "met (off / on)"],
                    side_by_side(results["gates"])),
            *(line for gate in GATES for line in where_section(gate, results["gates"][gate]["overload"]))]


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "overload.json").write_text(json.dumps(results, indent=2))
    (out / "overload.md").write_text("\n".join(["# Overload and soak benchmark, admission gate off and on", "",
                                                *markdown(results)[1:]]) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="a cpu repository to serve (default: build one in --out); "
                        "its classification configs are rewritten for the measured capacity")
    parser.add_argument("--latency-budget-s", type=float, default=DEFAULT_LATENCY_BUDGET_S,
                        help="the budget the queues are sized from")
    parser.add_argument("--image", type=Path, default=ROOT / "samples" / "chelsea.jpg")
    parser.add_argument("--duration-s", type=float, default=60.0, help="length of the overload")
    parser.add_argument("--factor", type=float, default=DEFAULT_FACTOR, help="offered load as a multiple of the capacity")
    parser.add_argument("--soak-requests", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="threads (one client each) of the open loop")
    parser.add_argument("--client-cpus", type=int, nargs="+", default=[], metavar="CPU",
                        help="run the load generator on these CPUs and the server on the others (default: both "
                             "on every CPU)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/overload-<timestamp>")
    args = parser.parse_args(argv)
    if args.duration_s <= 0 or args.factor <= 0 or args.soak_requests < 1 or args.workers < 1:
        parser.error("--duration-s, --factor, --soak-requests and --workers must be above 0")
    if not args.image.is_file():
        parser.error(f"no such image file: {args.image}")
    cpus = set(range(os.cpu_count()))
    if args.client_cpus and not set(args.client_cpus) < cpus:
        parser.error(f"--client-cpus {' '.join(map(str, args.client_cpus))}: choose some, not all, of the CPUs "
                     f"0-{len(cpus) - 1}, so that the server has one of its own")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or ROOT / "benchmarks" / "results" / f"overload-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    run = {"factor": args.factor, "duration_s": args.duration_s, "workers": args.workers,
           "soak_requests": args.soak_requests, "client_cpus": set(args.client_cpus)}
    try:
        repository = args.repository or classification_repository(out / "repository", args.latency_budget_s)
        results = measure(repository, args.image.read_bytes(), args.latency_budget_s, run, logs=out)
    except (NoQueuePolicy, NoCapacity, ServingOptionError) as error:
        print(f"error: {error}")
        return 2
    write(results, out)
    print("\n".join(markdown(results)))
    print(f"report: {out / 'overload.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
