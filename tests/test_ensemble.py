"""The served ensemble against an in-process reference, over every route the server offers."""
from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from builders import dali, inception
from builders import ensemble_dali_inception as ensemble
from clients.classify import classify_scores, classify_top_k, encoded_batch
from clients.protocols import SERVER_PROTOCOLS, infer, server_route
from builders.in_process import DaliPreprocessor, InProcessEnsemble
from local_server import TritonServer

pytestmark = pytest.mark.quick

RTOL = 1e-4  # relative: random-weight softmax scores are all near 1/1001


def test_served_ensemble_equals_in_process_dali_and_onnx_on_real_photos(server, cpu_repository, photos):
    images = list(photos.values())
    served = np.stack([classify_scores(server_route(server, "http-binary"), [image])[0] for image in images])
    expected = InProcessEnsemble(cpu_repository).classify(images)
    np.testing.assert_allclose(served, expected, rtol=RTOL, atol=1e-7)
    assert served.shape == (len(images), 1001)
    np.testing.assert_allclose(served.sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(served[0] - served[1]).max() > 1e-6, "different photos must give different scores"


def test_served_dali_preprocessing_equals_in_process_pipeline_within_1e4(server, photos):
    image = photos["astronaut"]
    served = infer(server_route(server, "http-binary"), dali.NAME, {dali.INPUT.name: encoded_batch([image])},
                   [dali.OUTPUT.name])[dali.OUTPUT.name]
    expected = InProcessEnsemble(server.repository).preprocess([image])
    assert served.shape == (1, 299, 299, 3) and served.dtype == np.float32
    assert np.abs(served - expected).max() <= 1e-4
    assert -1.0 <= served.min() < -0.5 and 0.5 < served.max() <= 1.0


@pytest.mark.parametrize("protocol", [p for p in SERVER_PROTOCOLS if p != "http-binary"])
def test_every_route_gives_the_http_binary_result(server, photos, protocol):
    images = [photos["chelsea"], photos["coffee"]]
    baseline = classify_scores(server_route(server, "http-binary"), images)
    np.testing.assert_allclose(classify_scores(server_route(server, protocol), images), baseline, rtol=1e-6)


def test_one_padded_request_of_differently_sized_jpegs_equals_single_requests(server, photos):
    images = list(photos.values())
    assert len({len(image) for image in images}) == len(images)
    batched = classify_scores(server_route(server, "http-binary"), images)
    singles = np.stack([classify_scores(server_route(server, "grpc"), [image])[0] for image in images])
    np.testing.assert_allclose(batched, singles, rtol=RTOL, atol=1e-7)


@pytest.fixture(scope="module")
def dali_alone(cpu_repository, tmp_path_factory):
    """A server of its own with only a copy of ``dali``: its statistics count this module's requests alone."""
    repository = tmp_path_factory.mktemp("dali-alone")
    shutil.copytree(cpu_repository / dali.NAME, repository / dali.NAME)
    with TritonServer(repository, log_path=tmp_path_factory.mktemp("dali-alone-log") / "tritonserver.log") as triton:
        yield triton


def dali_statistics(server) -> dict:
    return requests.get(f"http://{server.http_url}/v2/models/{dali.NAME}/stats", timeout=10).json()["model_stats"][0]


def executions_by_batch_size(statistics: dict) -> dict[int, int]:
    return {entry["batch_size"]: entry["compute_infer"]["count"] for entry in statistics["batch_stats"]}


def preprocess(server, images: list[bytes]) -> np.ndarray:
    """One request; a client per call, because tritonclient's clients are not thread-safe."""
    return infer(server_route(server, "grpc"), dali.NAME, {dali.INPUT.name: encoded_batch(images)},
                 [dali.OUTPUT.name])[dali.OUTPUT.name]


def test_dynamic_batcher_merges_concurrent_one_image_requests_and_each_keeps_its_rows(dali_alone, cpu_repository,
                                                                                      photos):
    singles = list(photos.values()) * 3  # JPEGs of four sizes: the merged batches are ragged
    before = dali_statistics(dali_alone)
    with ThreadPoolExecutor(max_workers=len(singles) + 1) as pool:
        # A 64-image request keeps the one instance busy, so the one-image requests queue up behind it.
        busy = pool.submit(preprocess, dali_alone, [photos["astronaut"]] * 64)
        time.sleep(0.3)
        results = list(pool.map(lambda image: preprocess(dali_alone, [image])[0], singles))
        busy.result()
    after = dali_statistics(dali_alone)
    request_count = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    execution_count = after["execution_count"] - before["execution_count"]
    assert request_count == len(singles) + 1
    assert execution_count < request_count, f"{request_count} requests ran in {execution_count} executions"
    executed, earlier = executions_by_batch_size(after), executions_by_batch_size(before)
    merged = {size: count - earlier.get(size, 0) for size, count in executed.items() if 1 < size < 64}
    # No request carried 2 to 63 images: an execution of that size ran several requests together.
    assert any(merged.values()), f"executions by batch size: {executed}"
    expected = DaliPreprocessor(cpu_repository)(singles)
    assert np.abs(np.stack(results) - expected).max() <= 1e-4


def test_the_posts_json_payload_works_unchanged_over_http_and_sagemaker(server, photos):
    image = np.frombuffer(photos["chelsea"], dtype=np.uint8)
    payload = {"inputs": [{"name": "INPUT", "shape": [1, len(image)], "datatype": "UINT8",
                           "data": image.tolist()}]}
    expected = classify_scores(server_route(server, "http-binary"), [photos["chelsea"]])
    for url in (f"http://{server.http_url}/v2/models/ensemble_dali_inception/infer",
                f"{server.sagemaker_url}/invocations"):
        response = requests.post(url, data=json.dumps(payload), headers={"Content-Type": "application/json"},
                                 timeout=60)
        assert response.status_code == 200, response.text
        output = response.json()["outputs"][0]
        assert output["name"] == "OUTPUT" and output["shape"] == [1, 1001]
        np.testing.assert_allclose(np.array(output["data"]).reshape(1, 1001), expected, rtol=1e-6)


def test_sagemaker_binary_json_response_keeps_the_binary_content_type(server, photos):
    from clients.protocols import SAGEMAKER_BINARY_TYPE, sagemaker_body

    body, content_type = sagemaker_body({"INPUT": encoded_batch([photos["coffee"]])}, ["OUTPUT"], binary=True)
    response = requests.post(f"{server.sagemaker_url}/invocations", data=body,
                             headers={"Content-Type": content_type}, timeout=60)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(SAGEMAKER_BINARY_TYPE + ";json-header-size=")


def test_top_k_labels_come_from_the_label_file_with_background_first(server, cpu_repository, photos):
    labels = (cpu_repository / ensemble.NAME / inception.OUTPUT.label_filename).read_text().splitlines()
    assert len(labels) == 1001 and labels[0] == "background" and labels[1] == "tench"
    scores = classify_scores(server_route(server, "http-binary"), [photos["rocket"]])[0]
    for protocol in ("http-json", "grpc", "sagemaker-binary"):
        ranked = classify_top_k(server_route(server, protocol), [photos["rocket"]], top_k=3)[0]
        assert [index for _, index, _ in ranked] == list(np.argsort(-scores)[:3])
        assert all(label == labels[index] for _, index, label in ranked)
