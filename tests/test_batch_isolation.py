"""A bad request batched with good ones fails alone; the good ones get what they get when sent alone.

The server here serves copies of the session repository's models whose dynamic batchers
wait 200 ms for more requests, so requests sent together land in one batch; the models'
statistics prove it (fewer executions than inferences). Every batch must run as one: the
log must not show a batch that failed and was rerun request by request.
"""
from __future__ import annotations

import io
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from benchmarks.overload import oversized_png
from builders import dali, defect_inspection, defect_router, ensemble_dali_inception, inception, lama_decode
from clients.classify import classify_scores, encoded_batch
from clients.protocols import RequestError, Route, infer
from local_server import TritonServer
from tests.conftest import SAMPLES

QUEUE_DELAY_US = 200_000
RTOL = 1e-4  # relative: random-weight softmax scores are all near 1/1001; batched ONNX sums in another order


def with_queue_delay(config: str, delay_us: int) -> str:
    """The config with its dynamic batcher waiting ``delay_us`` for more requests."""
    config = re.sub(r"\n\s*max_queue_delay_microseconds: \d+", "", config)
    return config.replace("dynamic_batching {", f"dynamic_batching {{\n  max_queue_delay_microseconds: {delay_us}", 1)


@pytest.fixture(scope="module")
def batching_server(cpu_repository, board, tmp_path_factory):
    """The classification ensemble, the board's inspection pipeline and ``lama_decode``, slow to dispatch."""
    repository = tmp_path_factory.mktemp("slow-batching")
    models = [ensemble_dali_inception.GUARD.name, dali.NAME, inception.model_name(inception.BuildOptions()),
              ensemble_dali_inception.NAME, *defect_inspection.models(board), lama_decode.NAME]
    for model in models:
        shutil.copytree(cpu_repository / model, repository / model)
        config = repository / model / "config.pbtxt"
        config.write_text(with_queue_delay(config.read_text(), QUEUE_DELAY_US))
    with TritonServer(repository, log_path=tmp_path_factory.mktemp("slow-batching-log") / "tritonserver.log") as triton:
        yield triton


def executions(server, model: str) -> tuple[int, int]:
    statistics = requests.get(f"http://{server.http_url}/v2/models/{model}/stats", timeout=10).json()
    return statistics["model_stats"][0]["execution_count"], statistics["model_stats"][0]["inference_count"]


def reruns(server) -> list[str]:
    return [line for line in server.log_path.read_text(errors="replace").splitlines() if "one by one" in line]


def send_together(server, send, payloads: list, batched_models: list[str]) -> list:
    """``send(route, payload)`` for every payload at once; each result or its RequestError."""
    def attempt(payload):
        try:
            return send(Route("grpc", server.grpc_url), payload)  # a client per thread: they are not thread-safe
        except RequestError as error:
            return error

    before = {model: executions(server, model) for model in batched_models}
    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        results = list(pool.map(attempt, payloads))
    for model in batched_models:
        (runs, inferences), (runs_before, inferences_before) = executions(server, model), before[model]
        assert runs - runs_before < inferences - inferences_before, f"{model}: the requests were not batched"
    return results


def assert_isolated(server, send, payloads: list, errors: dict[int, str], batched_models: list[str]):
    """Sent together, the payloads at ``errors`` fail with their own message, the others answer as alone."""
    reruns_before = len(reruns(server))
    alone = {index: send(Route("grpc", server.grpc_url), payload)
             for index, payload in enumerate(payloads) if index not in errors}
    results = send_together(server, send, payloads, batched_models)
    for index, result in enumerate(results):
        if index in errors:
            assert isinstance(result, RequestError) and re.search(errors[index], str(result)), (index, result)
        else:
            assert not isinstance(result, RequestError), f"good request {index} failed: {result}"
            assert_same_outputs(result, alone[index])
    assert reruns(server)[reruns_before:] == [], "a batch failed as a whole and was rerun request by request"
    assert server.is_running()
    assert not isinstance(send(Route("grpc", server.grpc_url), payloads[min(alone)]), RequestError)


def assert_same_outputs(batched: dict[str, np.ndarray], alone: dict[str, np.ndarray]):
    for name, expected in alone.items():
        if expected.dtype == object:  # labels
            assert np.array_equal(batched[name], expected), name
        else:
            np.testing.assert_allclose(batched[name], expected, rtol=RTOL, err_msg=name)


def png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def classify(route, image):
    return {"scores": classify_scores(route, [image])}


def test_classification_batch_with_undecodable_and_refused_images_fails_only_those(batching_server):
    chelsea, coffee = (SAMPLES / "chelsea.jpg").read_bytes(), (SAMPLES / "coffee.jpg").read_bytes()
    payloads = [chelsea, chelsea[:10_000], coffee, oversized_png(), chelsea]
    errors = {1: r"could not decode the image data \(DALI_INPUT_0: 10000 bytes\)",
              3: r"image 0 of the batch \(input INPUT\) is 20000x20000 = 400000000 pixels, over .* limit"}
    assert_isolated(batching_server, classify, payloads, errors,
                    [ensemble_dali_inception.GUARD.name, dali.NAME])


def test_inspection_batch_with_small_and_undecodable_images_fails_only_those(batching_server, board):
    pipeline = defect_inspection.name(board)
    outputs = [tensor.name for tensor in defect_inspection.outputs(board)]

    def inspect(route, image):
        return infer(route, pipeline, {defect_inspection.INPUT.name: encoded_batch([image])}, outputs)

    good, other = png(320, 240, (20, 110, 40)), png(400, 300, (180, 170, 60))
    # A cut JPEG: DALI names the sample it could not decode (for a cut PNG it does not, and the batch is rerun).
    payloads = [good, png(20, 20, (20, 110, 40)), other, (SAMPLES / "chelsea.jpg").read_bytes()[:10_000], good]
    errors = {1: r"image 0 is 20x20 pixels; defect inspection needs at least",
              3: r"could not decode the image data \(DALI_INPUT_0: 10000 bytes\)"}
    assert_isolated(batching_server, inspect, payloads, errors,
                    [defect_inspection.guard(board).name, defect_router.name(board)])


def test_decode_batch_with_an_empty_mask_pairs_every_other_image_with_its_own_mask(batching_server):
    def decode(route, pair):
        inputs = {lama_decode.ENCODED_IMAGE.name: encoded_batch([pair[0]]),
                  lama_decode.ENCODED_MASK.name: encoded_batch([pair[1]])}
        return infer(route, lama_decode.NAME, inputs, [lama_decode.IMAGE.name, lama_decode.MASK.name])

    mask = png(64, 48, (255, 255, 255))
    payloads = [(png(64, 48, (200, 10, 10)), mask), (png(64, 48, (0, 0, 200)), b"\0" * 16),
                (png(32, 24, (0, 150, 0)), png(32, 24, (0, 0, 0)))]
    errors = {1: r"input ENCODED_MASK: image 0 of the batch is empty"}
    assert_isolated(batching_server, decode, payloads, errors, [lama_decode.NAME])
