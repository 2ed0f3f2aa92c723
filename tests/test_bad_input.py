"""Bad requests get a clear error naming the problem, and the server keeps serving."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from builders import ensemble_dali_inception as ensemble
from builders import inception
from clients.classify import classify_scores, encoded_batch
from clients.protocols import RequestError, Route, infer, sagemaker_body
from local_server import ServerError, TritonServer
from tests.conftest import ROOT

pytestmark = pytest.mark.quick


@pytest.fixture()
def http(server):
    route = Route("http-binary", server.http_url)
    yield route
    # Every bad request is followed by a good one: the server is still serving.
    assert server.is_running()
    assert classify_scores(route, [(ensemble_sample())]).shape == (1, 1001)


def ensemble_sample() -> bytes:
    from tests.conftest import SAMPLES

    return (SAMPLES / "chelsea.jpg").read_bytes()


def test_truncated_jpeg_is_rejected_as_undecodable(http):
    with pytest.raises(RequestError, match="could not decode the image data"):
        classify_scores(http, [ensemble_sample()[:10_000]])


def test_jpeg_with_corrupt_header_is_rejected_as_undecodable(http):
    image = bytearray(ensemble_sample())
    image[2:600] = np.random.default_rng(0).integers(0, 256, 598, dtype=np.uint8).tobytes()
    with pytest.raises(RequestError, match="could not decode the image data"):
        classify_scores(http, [bytes(image)])


def test_non_image_file_is_rejected_as_undecodable(http):
    with pytest.raises(RequestError, match="not an encoded image"):
        classify_scores(http, [b"name,value\nthis is a csv file,1\n" * 20])


def test_damage_inside_the_entropy_coded_data_is_decoded_as_far_as_possible(http):
    image = bytearray(ensemble_sample())
    damage_at = image.index(b"\xff\xda") + 2000  # inside the scan data, past every header
    image[damage_at:damage_at + 64] = bytes(range(64))  # no 0xFF byte: no marker is made
    damaged = classify_scores(http, [bytes(image)])
    assert damaged.shape == (1, 1001)
    assert not np.array_equal(damaged, classify_scores(http, [ensemble_sample()])), "the damage changed nothing"


def test_one_bad_image_in_a_batch_names_its_position(http):
    with pytest.raises(RequestError, match="Failed to decode sample #1"):
        classify_scores(http, [ensemble_sample(), ensemble_sample()[:10_000]])


def retry_lines(server) -> list[str]:
    return [line for line in server.log_path.read_text(errors="replace").splitlines()
            if "running them one by one" in line]


def test_one_bad_image_among_concurrent_requests_fails_alone_and_the_batch_is_not_rerun(server, http):
    good, bad = ensemble_sample(), ensemble_sample()[:10_000]
    route = Route("grpc", server.grpc_url)

    def send(images):
        try:
            return classify_scores(route, images)
        except RequestError as error:
            return error

    retried_before = len(retry_lines(server))
    with ThreadPoolExecutor(max_workers=6) as pool:
        # A 64-image request keeps dali's one instance busy, so the requests after it queue into one batch.
        busy = pool.submit(send, [good] * 64)
        time.sleep(0.3)
        results = list(pool.map(send, [[good], [good], [bad], [good], [good]]))
    assert isinstance(busy.result(), np.ndarray)
    assert [isinstance(result, RequestError) for result in results] == [False, False, True, False, False]
    assert "could not decode the image data" in str(results[2])
    retried = retry_lines(server)[retried_before:]
    assert retried == [], "the runner reran the batch request by request instead of failing the bad one alone"


@pytest.mark.parametrize("url_of", [lambda s: f"http://{s.http_url}/v2/models/{ensemble.NAME}/infer",
                                    lambda s: f"{s.sagemaker_url}/invocations"], ids=["http", "sagemaker"])
def test_empty_body_is_a_400_naming_the_empty_input(server, http, url_of):
    response = requests.post(url_of(server), data=b"", headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 400
    assert "empty" in response.json()["error"]


def test_wrong_dtype_is_rejected_naming_the_expected_type(http):
    with pytest.raises(RequestError, match="data-type is 'FP32', but model 'ensemble_dali_inception' expects 'UINT8'"):
        infer(http, ensemble.NAME, {"INPUT": np.zeros((1, 100), np.float32)}, ["OUTPUT"])


def test_wrong_shape_is_rejected_naming_the_expected_shape(http):
    with pytest.raises(RequestError, match="unexpected shape"):
        infer(http, inception.model_name(inception.BuildOptions()),
              {inception.INPUT.name: np.zeros((1, 100, 100, 3), np.float32)}, [inception.OUTPUT.name])


def test_batch_larger_than_max_batch_size_is_rejected(http):
    with pytest.raises(RequestError, match="batch-size must be <= 64"):
        classify_scores(http, [ensemble_sample()] * 65)


def test_wrong_json_header_size_is_rejected(server, http):
    body, content_type = sagemaker_body({"INPUT": encoded_batch([ensemble_sample()])}, ["OUTPUT"], binary=True)
    prefix, size = content_type.split("json-header-size=")
    # Triton's SageMaker frontend answers a header cut mid-JSON with a 500 (its choice), a size past the body with a 400.
    for wrong, complaint, status in ((int(size) + 7, "failed to parse the request JSON", 500),
                                     (len(body) * 2, "inference header size should be in range", 400)):
        response = requests.post(f"{server.sagemaker_url}/invocations", data=body,
                                 headers={"Content-Type": f"{prefix}json-header-size={wrong}"}, timeout=30)
        assert response.status_code == status
        assert complaint in response.json()["error"]


def test_missing_weights_file_at_build_time_is_named_and_builds_nothing(tmp_path):
    missing = tmp_path / "inception_v3_2016_08_28_frozen.pb"
    build = subprocess.run([sys.executable, "-m", "builders", "--target", "cpu", "--out", str(tmp_path / "repo"),
                            "--inception-weights", str(missing)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert build.returncode == 2
    assert f"build failed: Inception V3 weights file {missing} does not exist" in build.stderr
    assert not (tmp_path / "repo").exists()


def test_missing_model_file_in_a_repository_stops_start_up_with_the_file_named(cpu_repository, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(cpu_repository, broken)
    (broken / "inception_onnx" / "1" / "model.onnx").unlink()
    with pytest.raises(ServerError, match="model.onnx"):
        TritonServer(broken).start(timeout_s=60)


def test_port_already_in_use_is_reported_before_starting(cpu_repository):
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        with pytest.raises(ServerError, match=f"http port {busy} is already in use"):
            TritonServer(cpu_repository, http_port=busy).start()
