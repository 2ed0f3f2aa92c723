"""Bad requests get a clear error naming the problem, and the server keeps serving."""
from __future__ import annotations

import shutil
import socket

import numpy as np
import pytest
import requests

from builders import ensemble_dali_inception as ensemble
from builders import inception
from builders.__main__ import main as build_main
from clients.classify import classify_scores, encoded_batch
from clients.protocols import RequestError, Route, infer, sagemaker_body
from local_server import ServerError, TritonServer


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


def test_one_bad_image_in_a_batch_names_its_position(http):
    with pytest.raises(RequestError, match="Failed to decode sample #1"):
        classify_scores(http, [ensemble_sample(), ensemble_sample()[:10_000]])


def test_bad_request_does_not_spoil_concurrent_good_requests(server):
    from concurrent.futures import ThreadPoolExecutor

    good, bad = ensemble_sample(), ensemble_sample()[:10_000]
    route = Route("grpc", server.grpc_url)

    def send(image):
        try:
            return classify_scores(route, [image])
        except RequestError as error:
            return error

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(send, [good, bad] * 6))
    assert all(isinstance(result, np.ndarray) for result in results[0::2])
    assert all(isinstance(result, RequestError) for result in results[1::2])


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
    for wrong, complaint in ((int(size) + 7, "failed to parse the request JSON"),
                             (len(body) * 2, "inference header size should be in range")):
        response = requests.post(f"{server.sagemaker_url}/invocations", data=body,
                                 headers={"Content-Type": f"{prefix}json-header-size={wrong}"}, timeout=30)
        assert 400 <= response.status_code < 600
        assert complaint in response.json()["error"]


def test_missing_weights_file_at_build_time_is_named_and_builds_nothing(tmp_path, capsys):
    missing = tmp_path / "inception_v3_2016_08_28_frozen.pb"
    assert build_main(["--target", "cpu", "--out", str(tmp_path / "repo"), "--inception-weights", str(missing)]) == 2
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
