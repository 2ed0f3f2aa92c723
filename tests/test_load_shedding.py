"""Load shedding: queues sized from the latency budget refuse at once past their limit, the
refusal reaches clients (and SageMaker's route) as overload, and the build options are checked.

The server tests serve the cpu ``dali`` model alone (it builds in a second) with a budget so
small that its queue holds one request: a burst of large batches is more than it may queue.
Beside it, ``dali_guard`` -> ``dali`` as a pipeline of two steps, whose guard admits the 1
request/s the build was told the pipeline serves.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests

from builders import dali, ensemble_dali_inception
from builders.__main__ import main as build_main
from builders.config import model_config, parse, render
from builders.declaration import BuildOptions, EnsembleStep, ModelDeclaration, Serving
from builders.load_shedding import (
    DEFAULT_CAPACITY_RPS,
    DEFAULT_LATENCY_BUDGET_S,
    admission_rate,
    queue_policy,
)
from builders.repository import build_repository, declarations
from clients.classify import encoded_batch
from clients.protocols import (
    EXIT_OVERLOADED,
    RequestError,
    Route,
    ServerOverloaded,
    exit_status,
    failure_line,
    infer,
)
from local_server import TritonServer
from local_server.endpoint_route import EndpointRoute
from tests.conftest import ROOT

pytestmark = pytest.mark.quick

TIGHT = {"latency_budget_s": 2.0, "capacity_rps": 1.0}  # dali: 3 steps deep, 0.33 s wait, queue of 1
SHORT_WAIT = "dali_short_wait"  # a copy of dali whose queue is long but whose wait is 50 ms
BURST = 12
IMAGES_PER_REQUEST = 16  # a request DALI needs a few hundred ms for on this machine
REFUSED_WITHIN_S = 1.0  # a refusal is the scheduler's, not an execution: generous on a loaded 2-core machine
GUARD = ensemble_dali_inception.GUARD
GATED = "gated_dali"  # dali_guard -> ROOMY
ROOMY = "dali_roomy"  # a copy of dali with the default budget's queue (31 requests, 1.67 s)


def dali_request(photo: bytes) -> dict:
    return {dali.INPUT.name: encoded_batch([photo] * IMAGES_PER_REQUEST)}


def add_dali_copy(repository: Path, name: str, policy) -> None:
    """``dali`` again under another name, with another queue policy."""
    shutil.copytree(repository / dali.NAME, repository / name)
    model = dali.declare(BuildOptions(target="cpu"))
    model.name, model.queue_policy = name, policy
    (repository / name / "config.pbtxt").write_text(render(model_config(model, "cpu")))


def add_gated_pipeline(repository: Path) -> None:
    """The classification pipeline up to Inception: the guard, gated at 1 request/s, then DALI, both
    queueing what the default capacity serves, so that without the gate DALI would decode the whole burst."""
    roomy = queue_policy(DEFAULT_LATENCY_BUDGET_S, DEFAULT_CAPACITY_RPS, depth=3)
    add_dali_copy(repository, ROOMY, roomy)
    guard = GUARD.declare(BuildOptions(target="cpu", capacity_rps=1.0, admission_gate=True))
    guard.queue_policy = roomy
    (repository / GUARD.name / "config.pbtxt").write_text(render(model_config(guard, "cpu")))
    checked = GUARD.checked(ensemble_dali_inception.INPUT)
    model = ModelDeclaration(name=GATED, inputs=[ensemble_dali_inception.INPUT], outputs=[dali.OUTPUT],
                             max_batch_size=GUARD.max_batch_size, serving={"cpu": Serving(platform="ensemble")},
                             steps=[GUARD.step(), EnsembleStep(ROOMY, {dali.INPUT.name: checked},
                                                               {dali.OUTPUT.name: dali.OUTPUT.name})])
    (repository / GATED / "1").mkdir(parents=True)
    (repository / GATED / "config.pbtxt").write_text(render(model_config(model, "cpu")))


@pytest.fixture(scope="module")
def shedding_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("shedding") / "cpu"
    build_repository(repository, BuildOptions(target="cpu", models=(dali.NAME, GUARD.name), **TIGHT))
    add_dali_copy(repository, SHORT_WAIT, queue_policy(0.3, 100.0, depth=3))  # a long queue, a 50 ms wait
    add_gated_pipeline(repository)
    with TritonServer(repository, sagemaker_default_model=dali.NAME,
                      log_path=repository.parent / "tritonserver.log") as server:
        yield server


def burst(send, count: int = BURST) -> list[tuple[Exception | None, float]]:
    """``count`` requests at once, one thread (and one client) each: (error or None, seconds)."""
    outcomes = []
    lock = threading.Lock()

    def one() -> None:
        started = time.perf_counter()
        try:
            send()
            error = None
        except RequestError as failure:
            error = failure
        with lock:
            outcomes.append((error, time.perf_counter() - started))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_past_the_queue_limit_requests_are_refused_at_once_and_good_ones_are_served_after(shedding_server,
                                                                                          photos):
    route = Route("http-binary", shedding_server.http_url)
    inputs = dali_request(photos["astronaut"])
    outcomes = burst(lambda: infer(route, dali.NAME, inputs, [dali.OUTPUT.name]))
    refused = [error for error, _ in outcomes if error is not None]
    assert refused and len(refused) < BURST and all(isinstance(error, ServerOverloaded) for error in refused), outcomes
    # the queue full: refused at enqueue (the others waited their 0.33 s out)
    full = [seconds for error, seconds in outcomes if error is not None and "Exceeds maximum queue size" in str(error)]
    assert full and max(full) < REFUSED_WITHIN_S, outcomes
    assert infer(route, dali.NAME, inputs, [dali.OUTPUT.name])[dali.OUTPUT.name].shape[0] == IMAGES_PER_REQUEST
    assert shedding_server.is_running()


def inferences(server: TritonServer, model: str, at_least: int = 0) -> int:
    """The model's inference count, once it reaches ``at_least`` or after 5 s: Triton may send a
    response a moment before it counts the inference."""
    deadline = time.monotonic() + 5.0
    while True:
        answer = requests.get(f"http://{server.http_url}/v2/models/{model}/stats", timeout=30)
        answer.raise_for_status()
        count = answer.json()["model_stats"][0]["inference_count"]
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def test_the_guard_refuses_past_the_pipelines_capacity_before_any_later_step_runs(shedding_server, photos):
    route = Route("http-binary", shedding_server.http_url)
    inputs = {ensemble_dali_inception.INPUT.name: encoded_batch([photos["astronaut"]])}
    decoded = inferences(shedding_server, ROOMY)
    outcomes = burst(lambda: infer(route, GATED, inputs, [dali.OUTPUT.name]))
    answered = sum(error is None for error, _ in outcomes)
    # 1 request/s with a burst of one: one or two get in, DALI decodes no more, the rest are refused at once
    assert 1 <= answered <= 2 and inferences(shedding_server, ROOMY, decoded + answered) - decoded == answered, \
        outcomes
    assert all(isinstance(error, ServerOverloaded) and "Exceeds maximum queue size" in str(error)
               and seconds < REFUSED_WITHIN_S for error, seconds in outcomes if error is not None), outcomes
    # Triton's HTTP answer, as for a full queue: 503 and the guard's message (a token left over
    # from the burst lets at most one in, which fails as no image)
    body = {"inputs": [{"name": "INPUT", "datatype": "UINT8", "shape": [1, 3], "data": [[1, 2, 3]]}]}
    answers = [requests.post(f"http://{shedding_server.http_url}/v2/models/{GATED}/infer", json=body, timeout=30)
               for _ in range(3)]
    shed = [answer.json()["error"] for answer in answers if answer.status_code == 503]
    assert len(shed) >= 2 and set(shed) == {f"in ensemble '{GATED}', Exceeds maximum queue size of the pipeline: "
                                            "dali_guard admits 1 requests/s, what the pipeline serves "
                                            "(parameter admission_rps)"}, shed


def test_a_request_that_waits_past_its_share_of_the_budget_is_refused_as_overload(shedding_server, photos):
    route = Route("http-binary", shedding_server.http_url)
    inputs = dali_request(photos["astronaut"])
    outcomes = burst(lambda: infer(route, SHORT_WAIT, inputs, [dali.OUTPUT.name]), count=6)
    expired = [error for error, _ in outcomes if error is not None and "Request timeout expired" in str(error)]
    assert expired and all(isinstance(error, ServerOverloaded) for error in expired), outcomes


def test_sagemakers_route_answers_overload_as_model_error_with_the_containers_503(shedding_server, photos,
                                                                                  monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    inputs = dali_request(photos["astronaut"])
    with EndpointRoute({"shedding": shedding_server.sagemaker_url}) as route:
        endpoint = Route("sagemaker-endpoint", route.url, endpoint_name="shedding", region="us-east-1")
        outcomes = burst(lambda: infer(endpoint, dali.NAME, inputs, [dali.OUTPUT.name]))
        refused = [error for error, _ in outcomes if error is not None]
        assert refused and all(isinstance(error, ServerOverloaded) and "ModelError" in str(error)
                               for error in refused), outcomes
        answers = burst(lambda: raw_invocation(route.url, inputs))
    shed = [error for error, _ in answers if error is not None]
    assert shed and all(str(error) == "424 ModelError 503" for error in shed), answers


def raw_invocation(url: str, inputs: dict) -> None:
    """One InvokeEndpoint as bytes on the wire; raises RequestError("status error-type original-status")."""
    from clients.protocols import sagemaker_body

    body, content_type = sagemaker_body(inputs, [dali.OUTPUT.name], binary=True)
    answer = requests.post(f"{url}/endpoints/shedding/invocations", data=body,
                           headers={"Content-Type": content_type}, timeout=60)
    if answer.status_code != 200:
        raise RequestError(f"{answer.status_code} {answer.headers.get('x-amzn-ErrorType')} "
                           f"{answer.json().get('OriginalStatusCode')}")


def test_clients_report_overload_in_one_line_and_a_retry_exit_status(shedding_server, photos):
    route = Route("http-binary", shedding_server.http_url)
    inputs = dali_request(photos["astronaut"])
    outcomes = burst(lambda: infer(route, dali.NAME, inputs, [dali.OUTPUT.name]))
    overload = next(error for error, _ in outcomes if error is not None)
    line = failure_line(overload)
    assert line.startswith("overloaded: ") and "retry later" in line and "\n" not in line
    with pytest.raises(RequestError) as bad_input:
        infer(route, dali.NAME, {dali.INPUT.name: encoded_batch([b"not a jpeg"])}, [dali.OUTPUT.name])
    assert failure_line(bad_input.value).startswith("error: ")
    assert (exit_status([overload]), exit_status([overload, bad_input.value]), exit_status([])) == \
        (EXIT_OVERLOADED, 1, 0)


def policies(options: BuildOptions) -> dict:
    return {model.name: model_config(model, options.target) for model in declarations(options)}


def test_every_queued_model_carries_the_policy_derived_from_the_budget(board):
    configs = policies(BuildOptions(target="cpu", products=(board,), latency_budget_s=6.0, capacity_rps=30.0))
    # classification: 3 steps, each may take 6 / 2 / 3 = 1 s, and queues what 30 req/s serve in half of it
    classification = configs[dali.NAME].dynamic_batching.default_queue_policy
    assert (classification.max_queue_size, classification.default_timeout_microseconds) == (15, 1_000_000)
    assert classification.timeout_action == classification.REJECT and not classification.allow_timeout_override
    # the board's pipeline: guard, DALI, then parent, child and segmenter side by side, then the router: a
    # request waits at 4 queues (of 6), each may take 6 / 2 / 4 = 0.75 s and queues what 30 req/s serve in half
    for model in ("pcb_guard", "pcb_child", "pcb_segmenter", "pcb_router"):
        board_queue = configs[model].dynamic_batching.default_queue_policy
        assert (board_queue.max_queue_size, board_queue.default_timeout_microseconds) == (12, 750_000), model
    for config in configs.values():
        queued = config.WhichOneof("scheduling_choice") == "dynamic_batching"
        assert queued != (config.platform == "ensemble"), config.name
        assert not queued or config.dynamic_batching.default_queue_policy.max_queue_size > 0, config.name


@pytest.mark.parametrize("budget_s, capacity_rps, depth", [(10.0, 37.0, 3), (10.0, 3.7, 3), (6.0, 30.0, 5),
                                                           (2.0, 500.0, 1), (59.0, 1.0, 2)])
def test_a_full_queue_drains_and_its_batch_executes_within_the_steps_timeout(budget_s, capacity_rps, depth):
    """The timeout stops counting once a request is taken into a batch, so the queue is sized
    for the wait *and* the execution: draining a full queue (the batch before) and executing a
    batch of it take about 2 x queue / capacity, within the timeout (one request of rounding)."""
    policy = queue_policy(budget_s, capacity_rps, depth)
    timeout_s = policy.timeout_us / 1e6
    assert 2 * (policy.max_queue_size - 1) / capacity_rps <= timeout_s
    assert policy.max_queue_size >= 1 and abs(timeout_s * depth - budget_s / 2) < 1e-5


def test_committed_gpu_configs_carry_the_default_budget():
    config = parse((ROOT / "model_repository" / "inception_onnx" / "config.pbtxt").read_text())
    expected = queue_policy(DEFAULT_LATENCY_BUDGET_S, DEFAULT_CAPACITY_RPS, depth=3)
    policy = config.dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (expected.max_queue_size,
                                                                           expected.timeout_us)


def test_ensembles_get_backpressure_only_where_the_images_triton_has_it():
    newest = policies(BuildOptions(target="gpu"))  # the deploy default image: Triton 2.69
    assert newest["ensemble_dali_inception"].ensemble_scheduling.max_inflight_requests == \
        newest[dali.NAME].dynamic_batching.default_queue_policy.max_queue_size
    for older in (BuildOptions(target="gpu", triton_image="24.09"), BuildOptions(target="cpu")):  # 2.50, 2.51
        assert all(config.ensemble_scheduling.max_inflight_requests == 0 for config in policies(older).values())


def guard_admission(options: BuildOptions) -> dict[str, str]:
    guards = (GUARD.name, "lama_guard")
    return {name: config.parameters["admission_rps"].string_value
            for name, config in policies(options).items() if name in guards}


def test_the_gate_is_off_unless_asked_for_and_then_admits_the_capacity_on_both_targets():
    for target in ("cpu", "gpu"):
        assert guard_admission(BuildOptions(target=target)) == {GUARD.name: "0", "lama_guard": "0"}
        assert guard_admission(BuildOptions(target=target, capacity_rps=13.9, admission_gate=True)) == \
            {GUARD.name: "13.9", "lama_guard": "13.9"}
    committed = parse((ROOT / "model_repository" / GUARD.name / "config.pbtxt").read_text())
    assert committed.parameters["admission_rps"].string_value == "0"
    assert admission_rate(False, DEFAULT_CAPACITY_RPS) == 0.0


def test_every_instance_of_a_guard_admits_from_one_bucket(tmp_path):
    from builders.runners.admission import TokenBucket

    path = str(tmp_path / "bucket")
    first, second = TokenBucket(2.0, path), TokenBucket(2.0, path)  # 2 req/s: a burst of one
    assert (first.admit(3), second.admit(3)) == (1, 0)
    time.sleep(0.6)
    assert second.admit(3) == 1
    first.close()
    second.close()


def test_a_guard_removes_the_buckets_left_by_servers_that_are_gone(tmp_path, monkeypatch):
    import subprocess
    import tempfile

    from builders.runners.admission import PREFIX, remove_stale

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its process id names no process
    for server in (gone.pid, os.getpid()):
        (tmp_path / f"{PREFIX}{server}-{GUARD.name}").write_bytes(bytes(16))
    remove_stale(GUARD.name)
    assert [path.name for path in tmp_path.iterdir()] == [f"{PREFIX}{os.getpid()}-{GUARD.name}"]


@pytest.mark.parametrize("text", ["fast", "-1", "nan", "inf"])
def test_a_bad_admission_rate_in_a_guards_config_is_refused_with_its_name(text):
    from builders.runners.admission import parse_rate

    with pytest.raises(ValueError, match=rf"parameter admission_rps of dali_guard is '{text}': write the "
                                         "requests/s the pipeline serves, or 0 for no admission gate"):
        parse_rate(text, owner=GUARD.name)


def test_instances_option_sets_each_models_instance_count(tmp_path):
    assert build_main(["--target", "cpu", "--configs-only", "--out", str(tmp_path), "--models", dali.NAME,
                       "inception_onnx", "--instances", f"{dali.NAME}=3", "inception_onnx=2"]) == 0
    counts = {name: parse((tmp_path / name / "config.pbtxt").read_text()).instance_group[0].count
              for name in (dali.NAME, "inception_onnx")}
    assert counts == {dali.NAME: 3, "inception_onnx": 2}


@pytest.mark.parametrize("arguments, message", [
    (["--instances", "daly=2"], "--instances: no model named daly; known: dali, dali_guard"),
    (["--instances", "dali=0"], "--instances 'dali=0': write MODEL=N with N a whole number of at least 1"),
    (["--instances", "dali"], "--instances 'dali': write MODEL=N"),
    (["--instances", "ensemble_lama=2"], "ensemble_lama is an ensemble, which has no instances"),
    (["--latency-budget-s", "60"], "--latency-budget-s 60: choose more than 0 and less than SageMaker's 60 s"),
    (["--latency-budget-s", "0"], "--latency-budget-s 0: choose more than 0"),
    (["--capacity-rps", "-1"], "--capacity-rps -1: choose a number of requests per second above 0"),
    (["--capacity-rps", "inf"], "--capacity-rps inf: choose a number of requests per second above 0 (and finite"),
    (["--triton-image", "26.05"], "--triton-image 26.05 needs --target gpu"),
])
def test_a_bad_serving_option_is_refused_in_one_line_before_anything_is_built(tmp_path, caplog, arguments,
                                                                            message):
    caplog.set_level(logging.ERROR)
    assert build_main(["--target", "cpu", "--configs-only", "--out", str(tmp_path / "out"), *arguments]) == 2
    (record,) = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert message in record.getMessage() and "\n" not in record.getMessage()
    assert not (tmp_path / "out").exists()


def outcome(scheduled: float, latency_s: float, kind: str = "answered"):
    from benchmarks.overload import Outcome

    return Outcome(scheduled=scheduled, sent=scheduled, finished=scheduled + latency_s, kind=kind)


def test_goodput_counts_answers_within_the_budget_over_the_time_until_the_last_answer():
    from benchmarks.overload import overload_figures

    # listed as they finished: a refusal first, sent after the first request was scheduled
    outcomes = [outcome(1.0, 0.01, "refused"), outcome(0.0, 2.0), outcome(5.0, 3.0), outcome(9.0, 11.0)]
    figures = overload_figures(outcomes, capacity=1.0, rate=1.0, duration_s=10.0, budget_s=10.0)
    # the answer 11 s late is no goodput; the span runs from 0.0 (not 1.0) to the last answer at 20.0
    assert figures["goodput_span_s"] == pytest.approx(20.0)
    assert figures["goodput_rps"] == pytest.approx(2 / 20.0)
    assert (figures["answered"], figures["refused"], figures["answered_p99_within_budget"]) == (3, 1, False)


def test_the_overload_rewrites_only_the_queue_policies_for_the_measured_capacity(tmp_path):
    from benchmarks.overload import (
        CLASSIFICATION,
        classification_options,
        queue_policies,
        resize_queues,
    )

    build_repository(tmp_path, classification_options(DEFAULT_LATENCY_BUDGET_S, DEFAULT_CAPACITY_RPS,
                                                      configs_only=True))
    (tmp_path / dali.NAME / "1").mkdir()
    (tmp_path / dali.NAME / "1" / "model.dali").write_bytes(b"kept")
    resize_queues(tmp_path, DEFAULT_LATENCY_BUDGET_S, 3.7)
    expected = queue_policy(DEFAULT_LATENCY_BUDGET_S, 3.7, depth=3)
    steps = [name for name in CLASSIFICATION if name != "ensemble_dali_inception"]
    assert queue_policies(tmp_path) == {name: {"max_queue_size": expected.max_queue_size,
                                               "timeout_ms": expected.timeout_us / 1000} for name in steps}
    assert (tmp_path / dali.NAME / "1" / "model.dali").read_bytes() == b"kept"
