"""The served ensemble against an in-process reference, over every route the server offers."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from builders import dali, inception
from builders import ensemble_dali_inception as ensemble
from clients.classify import classify_scores, classify_top_k, encoded_batch
from clients.protocols import SERVER_PROTOCOLS, infer, server_route
from builders.in_process import InProcessEnsemble

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


def test_concurrent_requests_of_different_lengths_batch_raggedly_and_keep_their_results(server, photos):
    images = list(photos.values()) * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda image: classify_scores(server_route(server, "grpc"), [image])[0], images))
    expected = InProcessEnsemble(server.repository).classify(images)
    np.testing.assert_allclose(np.stack(results), expected, rtol=RTOL, atol=1e-7)
    stats = requests.get(f"http://{server.http_url}/v2/models/{dali.NAME}/stats", timeout=10).json()
    model_stats = stats["model_stats"][0]
    assert model_stats["inference_count"] >= len(images)


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
