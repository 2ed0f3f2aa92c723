"""Faults against real tritonserver processes: a container killed mid-traffic, a python step that
raises, a warm-up that fails, clients that disconnect mid-request (docs/faults.md).

The models are tiny python-backend models written here, in a temporary folder: ``slow`` sleeps
as many seconds as its input says (and stops early once its request is cancelled), ``flaky_step``
is a project runner (``builders/runners/batching.py``) that raises on a negative input,
``flaky_pipeline`` an ensemble of it, ``bad_warmup`` a model whose declared warm-up fails.
"""
from __future__ import annotations

import io
import json
import shutil
import signal
import socket
import tarfile
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from local_server import TritonServer
from local_server.supervisor import Supervisor
from tests.test_emulator import BUCKET, client, outcome, release, submit, wait_for_status

RUNNERS = Path(__file__).resolve().parent.parent / "builders" / "runners"
TENSORS = """input [{ name: "INPUT0", data_type: TYPE_FP32, dims: [ 1 ] }]
output [{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 1 ] }]
"""
PYTHON_MODEL = f"""backend: "python"
max_batch_size: 1
{TENSORS}instance_group [{{ kind: KIND_CPU, count: 1 }}]
dynamic_batching {{ }}
"""
SLOW_MODEL = """import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [self.answer(request) for request in requests]

    def answer(self, request):
        data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
        deadline = time.monotonic() + min(float(data.flat[0]), 5.0)
        while time.monotonic() < deadline:
            if request.is_cancelled():  # a gRPC client that cancelled: stop the work
                return pb_utils.InferenceResponse(error=pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED))
            time.sleep(0.02)
        return pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)])
"""
FLAKY_STEP = """from batching import BatchedModel


class TritonPythonModel(BatchedModel):
    def run(self, inputs):
        rows = inputs["INPUT0"]
        if any(row[0] < 0 for row in rows):
            raise RuntimeError("the calibration table has no entry for a negative reading\\n(second line)")
        return {"OUTPUT0": rows}
"""
BAD_WARMUP = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        raise RuntimeError("warm-up input rejected: no calibration loaded")
"""
WARMUP = """model_warmup [{ name: "zeros", batch_size: 1,
  inputs { key: "INPUT0" value: { data_type: TYPE_FP32, dims: [ 1 ], zero_data: true } } }]
"""
PIPELINE = f"""platform: "ensemble"
max_batch_size: 1
{TENSORS}ensemble_scheduling {{ step [{{ model_name: "flaky_step", model_version: -1,
  input_map {{ key: "INPUT0" value: "INPUT0" }}, output_map {{ key: "OUTPUT0" value: "OUTPUT0" }} }}] }}
"""
SLOW_SECONDS = 0.4
DISCONNECTING_CLIENTS = 8


def write_model(root: Path, name: str, config: str, code: str | None = None, helpers: tuple[str, ...] = ()) -> None:
    version = root / name / "1"
    version.mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(f'name: "{name}"\n{config}')
    if code is not None:
        (version / "model.py").write_text(code)
    for helper in helpers:
        shutil.copy2(RUNNERS / f"{helper}.py", version)


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fault-models")
    write_model(root, "slow", PYTHON_MODEL, SLOW_MODEL)
    write_model(root, "flaky_step", PYTHON_MODEL, FLAKY_STEP, helpers=("batching",))
    write_model(root, "flaky_pipeline", PIPELINE)
    write_model(root, "bad_warmup", PYTHON_MODEL + WARMUP, BAD_WARMUP)
    return root


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    """HTTP and gRPC, explicit model control: every model loaded but ``bad_warmup``."""
    loads = [f"--load-model={name}" for name in ("slow", "flaky_step", "flaky_pipeline")]
    triton = TritonServer(repository, log_path=tmp_path_factory.mktemp("fault-log") / "server.log",
                          extra_args=["--model-control-mode=explicit", *loads]).start()
    yield triton
    triton.stop()


def infer(url: str, model: str, value: float) -> np.ndarray:
    with httpclient.InferenceServerClient(url) as triton:
        tensor = httpclient.InferInput("INPUT0", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.array([[value]], np.float32))
        return triton.infer(model, [tensor]).as_numpy("OUTPUT0")


def invocation_body(seconds: float) -> bytes:
    return json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32",
                                   "data": [seconds]}]}).encode()


def invoke(url: str, seconds: float = 0.0) -> str:
    """One SageMaker /invocations request: "ok", or the client's error in one line."""
    request = urllib.request.Request(f"{url}/invocations", data=invocation_body(seconds),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return "ok"
    except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
        return f"{type(error).__name__}: {error}"


class Traffic:
    """A client thread sending requests until told to stop, keeping every outcome in order."""

    def __init__(self, url: str):
        self.url, self.outcomes, self._stop = url, [], threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def _send(self) -> None:
        while not self._stop.is_set():
            self.outcomes.append(invoke(self.url, 0.05))
            time.sleep(0.05)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} after {timeout_s} s"
        time.sleep(0.1)


# -- a container killed mid-traffic ------------------------------------------------------
def test_killed_container_is_replaced_and_serving_resumes(repository, tmp_path):
    """The local SageMaker-mode host: SIGKILL under traffic, one line per failed request, then answers again."""
    container = TritonServer(repository, sagemaker_mode=True, sagemaker_default_model="slow",
                             log_path=tmp_path / "container.log").start()
    said: list[str] = []
    supervisor = Supervisor(container, name="container of slow", interval_s=0.3, say=said.append).start()
    try:
        port, first_pid = container.sagemaker_port, container.process.pid
        with Traffic(container.sagemaker_url) as traffic:
            wait_until(lambda: traffic.outcomes.count("ok") >= 3, 30, "no answer before the kill")
            answered_before = len(traffic.outcomes)
            container.process.send_signal(signal.SIGKILL)
            wait_until(lambda: supervisor.restarts == 1 and "ok" in traffic.outcomes[answered_before + 1:], 90,
                       "serving did not resume")
        after_kill = traffic.outcomes[answered_before:]
        errors = [outcome for outcome in after_kill if outcome != "ok"]
        assert errors, "no request saw the gap"
        assert all("\n" not in error and ("refused" in error or "closed" in error or "reset" in error)
                   for error in errors), errors
        assert container.process.pid != first_pid and container.sagemaker_port == port
        assert container.log_path.name.endswith(".restart-1")
        assert len(said) == 2 and "killed by SIGKILL" in said[0] and "back in service" in said[1], said
    finally:
        supervisor.stop()
    time.sleep(1)
    assert not container.is_running() and supervisor.restarts == 1, "a stopped container must stay stopped"


@pytest.fixture(scope="module")
def local_sagemaker(repository, tmp_path_factory):
    """The emulator with an async endpoint serving ``slow`` (the shared fixture's, with its model archive)."""
    from tests.aws_emulator import LocalSageMaker

    emulator = LocalSageMaker(tmp_path_factory.mktemp("fault-sagemaker")).start()
    emulator.s3().create_bucket(Bucket=BUCKET)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(repository / "slow", arcname="slow")
    emulator.s3().put_object(Bucket=BUCKET, Key="model.tar.gz", Body=archive.getvalue())
    config = release(emulator, "faulty-1", f"s3://{BUCKET}/model.tar.gz", {}, async_output=f"s3://{BUCKET}/async")
    client(emulator, "sagemaker").create_endpoint(EndpointName="faulty", EndpointConfigName=config)
    assert wait_for_status(emulator, "faulty", {"InService", "Failed"})["EndpointStatus"] == "InService"
    yield emulator
    emulator.stop()


def test_a_request_while_no_container_is_in_service_gets_sagemakers_503_service_unavailable():
    from local_server.endpoint_route import UNAVAILABLE, EndpointRoute
    from local_server.server import free_port

    with EndpointRoute({"replacing": f"http://127.0.0.1:{free_port()}"}) as route:  # nothing listens there
        body = {"inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [1, 3], "data": [7, 8, 9]}]}
        request = urllib.request.Request(f"{route.url}/endpoints/replacing/invocations", method="POST",
                                         data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 503 and refused.value.headers["x-amzn-ErrorType"] == "ServiceUnavailable"
    assert json.loads(refused.value.read())["message"] == UNAVAILABLE


def test_emulator_loses_no_async_request_when_its_container_dies(local_sagemaker):
    """Requests in flight and queued when the container is killed are answered by its replacement."""
    container = local_sagemaker.containers["faulty-1"]
    jobs = [submit(local_sagemaker, "faulty", invocation_body(1.0), "application/json") for _ in range(3)]
    time.sleep(0.6)  # the first is running in the container, the others wait in its queue
    container.process.send_signal(signal.SIGKILL)
    results = [outcome(local_sagemaker, output, failure, timeout_s=90) for output, failure in jobs]
    assert [kind for kind, _ in results] == ["output"] * 3, results
    assert all(json.loads(body)["outputs"][0]["data"] == [1.0] for _, body in results)
    assert local_sagemaker.supervisors["faulty-1"].restarts == 1
    log = (local_sagemaker.log_group("faulty") / "AllTraffic-supervisor").read_text()
    assert "killed by SIGKILL" in log and "back in service" in log


# -- a python step that raises -----------------------------------------------------------
@pytest.mark.parametrize("model", ["flaky_step", "flaky_pipeline"])
def test_python_step_that_raises_answers_500_naming_the_step(server, model):
    with pytest.raises(InferenceServerException) as raised:
        infer(server.http_url, model, -1.0)
    message = raised.value.message()
    assert raised.value.status() == "500", raised.value
    assert "python step flaky_step failed: RuntimeError: the calibration table has no entry" in message
    assert "\n" not in message
    assert infer(server.http_url, model, 2.0).tolist() == [[2.0]], "the step must keep serving"
    assert "Traceback" in server.log_path.read_text(errors="replace"), "the traceback belongs in the log"


# -- a failing warm-up -------------------------------------------------------------------
# Triton 2.51 does not always survive a python-backend warm-up that fails: measured 2026-12-02, the
# load answers "failed to run warmup sample" with its reason, or tritonserver takes signal 11 in
# libtritonserver and hangs (an error response from the warm-up: every time; execute() raising: the
# second load on a busy machine, once the first, in CI). What the project guarantees either way:
# the reason is in the log, the failing model is never served, and the supervisor brings the
# others back, as SageMaker replaces a container whose /ping fails (docs/faults.md).
def load_outcome(url: str, model: str) -> str:
    """The load's error message, or how the connection failed when the server went down under it."""
    with httpclient.InferenceServerClient(url, network_timeout=20) as triton:
        try:
            triton.load_model(model)
        except InferenceServerException as refused:
            return refused.message()
        except (OSError, HTTPException) as lost:  # refused, reset, timed out, closed mid-answer
            return f"server lost: {type(lost).__name__}"
    return "loaded"


def test_failing_warmup_is_never_served_and_the_other_models_keep_or_resume_serving(repository, tmp_path):
    triton = TritonServer(repository, log_path=tmp_path / "server.log",
                          extra_args=["--model-control-mode=explicit", "--load-model=slow"]).start()
    first_log = triton.log_path
    supervisor = Supervisor(triton, name="warm-up server", interval_s=0.3, say=lambda line: None).start()
    try:
        outcome_of_load = load_outcome(triton.http_url, "bad_warmup")
        assert outcome_of_load != "loaded"
        if not outcome_of_load.startswith("server lost"):
            assert "bad_warmup" in outcome_of_load and "warm-up input rejected" in outcome_of_load, outcome_of_load
        assert "warm-up input rejected: no calibration loaded" in first_log.read_text(errors="replace")
        wait_until(lambda: not supervisor.down and triton.is_running() and supervisor.health_problem() is None,
                   90, "the server did not come back")
        assert infer(triton.http_url, "slow", 0.0).tolist() == [[0.0]], "the other models serve"
        with httpclient.InferenceServerClient(triton.http_url) as client_after:
            assert not client_after.is_model_ready("bad_warmup")
    finally:
        supervisor.stop()


# -- clients that disconnect mid-request -------------------------------------------------
def raw_infer_request(server: TritonServer) -> bytes:
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32",
                                   "data": [SLOW_SECONDS]}]}).encode()
    return (f"POST /v2/models/slow/infer HTTP/1.1\r\nHost: {server.http_url}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def slow_executions(server: TritonServer) -> int:
    with httpclient.InferenceServerClient(server.http_url) as triton:
        return int(triton.get_inference_statistics("slow")["model_stats"][0]["inference_count"])


def timed_answer(server: TritonServer) -> float:
    started = time.monotonic()
    assert infer(server.http_url, "slow", 0.0).tolist() == [[0.0]]
    return time.monotonic() - started


def test_http_clients_that_disconnect_leave_work_that_drains(server):
    """HTTP has no cancellation in Triton 2.51: the abandoned requests still run, then the server answers."""
    before = slow_executions(server)
    for _ in range(DISCONNECTING_CLIENTS):
        with socket.create_connection((server.host, server.http_port)) as sock:
            sock.sendall(raw_infer_request(server))  # closed before reading the answer
    waited = timed_answer(server)
    assert waited < DISCONNECTING_CLIENTS * SLOW_SECONDS + 3, f"queue did not drain: {waited:.1f} s"
    wait_until(lambda: slow_executions(server) - before >= DISCONNECTING_CLIENTS + 1, 10,
               "the abandoned requests did not all run")
    assert timed_answer(server) < SLOW_SECONDS + 1, "a new request after the drain must be prompt"


def test_grpc_clients_that_cancel_free_the_work(server):
    """gRPC cancellation reaches the queue and the running step: the next request is answered promptly."""
    before = slow_executions(server)
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        tensor = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.array([[SLOW_SECONDS]], np.float32))
        calls = [triton.async_infer("slow", [tensor], callback=lambda *_, **__: None) for _ in range(DISCONNECTING_CLIENTS)]
        time.sleep(0.2)
        for call in calls:
            call.cancel()
        waited = timed_answer(server)
    assert waited < 3 * SLOW_SECONDS + 1, f"cancelled requests still held the model for {waited:.1f} s"
    assert slow_executions(server) - before < DISCONNECTING_CLIENTS, "every cancelled request ran"
