"""The guard that keeps a shape its data does not fill away from tritonserver.

One JSON request declaring ``[1, 1000000000000]`` with one element aborts tritonserver 2.51
(docs/triton-json-shape-bug.md), so the end-to-end test runs its own throw-away
SageMaker-mode server, never the shared session ``server``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

from clients.protocols import Route, infer
from local_server import TritonServer
from local_server.request_guard import InvalidInferenceRequest, check_inference_request

pytestmark = pytest.mark.quick

SAGEMAKER_BINARY = "application/vnd.sagemaker-triton.binary+json;json-header-size={}"
CRASHING_SHAPE = [1, 1000000000000]
IDENTITY_CONFIG = """name: "identity"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0", data_type: TYPE_UINT8, dims: [ -1, -1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_UINT8, dims: [ -1, -1 ] } ]
"""
IDENTITY_MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUTPUT0", pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy())]) for request in requests]
"""


def json_request(name: str, datatype: str, shape: list, data: list) -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}).encode()


def binary_request(*arrays: tuple[str, np.ndarray]) -> tuple[bytes, int]:
    """A binary+json body built by tritonclient: (body, JSON header size)."""
    inputs = []
    for name, array in arrays:
        tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return httpclient.InferenceServerClient.generate_request_body(inputs)


def with_header(body: bytes, header_size: int, edit) -> tuple[bytes, int]:
    """The same binary tensors behind a JSON header changed by ``edit(header_dict)``."""
    header = json.loads(body[:header_size])
    edit(header)
    new_header = json.dumps(header).encode()
    return new_header + body[header_size:], len(new_header)


def refusal(body: bytes, content_type: str, **kwargs) -> str:
    with pytest.raises(InvalidInferenceRequest) as refused:
        check_inference_request(body, content_type, **kwargs)
    return str(refused.value)


# -- requests a client library builds pass ------------------------------------------------
def test_requests_built_by_tritonclient_pass_in_json_binary_json_and_kserve_form():
    body, header_size = binary_request(("IMAGE", np.zeros((2, 3), np.float32)),
                                       ("NAMES", np.array([b"board", b""], dtype=object)))
    assert check_inference_request(body, SAGEMAKER_BINARY.format(header_size)) is None
    assert check_inference_request(body, "application/octet-stream",
                                   inference_header_length=str(header_size)) is None
    tensor = httpclient.InferInput("INPUT0", [2, 3], "UINT8")
    tensor.set_data_from_numpy(np.arange(6, dtype=np.uint8).reshape(2, 3), binary_data=False)
    json_body, _ = httpclient.InferenceServerClient.generate_request_body([tensor])
    assert check_inference_request(json_body, "application/json") is None
    rows = json_request("INPUT0", "UINT8", [2, 3], [[1, 2, 3], [4, 5, 6]])
    assert check_inference_request(rows, "application/json") is None
    assert check_inference_request(json_request("EMPTY", "FP32", [0, 3], []), "application/json") is None
    assert check_inference_request(json_request("NAMES", "BYTES", [2], ["board", ""]), "application/json") is None


# -- one test per rule ---------------------------------------------------------------------
def test_data_with_fewer_elements_than_the_declared_shape_is_refused_naming_input_and_shape():
    message = refusal(json_request("INPUT0", "UINT8", CRASHING_SHAPE, [1]), "application/json")
    assert message == ("input 'INPUT0' declares shape [1, 1000000000000] (1000000000000 elements) "
                       "but its 'data' holds 1")


def test_nested_data_is_counted_element_by_element():
    message = refusal(json_request("X", "INT32", [2, 3], [[1, 2, 3], [4, 5]]), "application/json")
    assert "declares shape [2, 3] (6 elements) but its 'data' holds 5" in message


@pytest.mark.parametrize("shape, shown", [([1, -3], "[1, -3]"), ([1, 2.5], "[1, 2.5]"), ([1, "4"], '[1, "4"]'),
                                          ([1, True], "[1, true]"), ("[1, 4]", '"[1, 4]"')],
                         ids=["negative", "fraction", "string-dim", "boolean", "string-shape"])
def test_negative_or_non_integer_dimensions_are_refused(shape, shown):
    message = refusal(json_request("X", "UINT8", shape, [1]), "application/json")
    assert message == f"input 'X' declares shape {shown}: dimensions must be non-negative integers"


def test_a_shape_past_tritons_int64_element_count_is_refused():
    message = refusal(json_request("X", "UINT8", [2**40, 2**40], [1]), "application/json")
    assert "declares shape [1099511627776, 1099511627776]: more than 9223372036854775807 elements" in message


def test_binary_data_size_other_than_shape_times_element_size_is_refused():
    body, header_size = binary_request(("IMAGE", np.zeros((2, 3), np.float32)))
    body, header_size = with_header(body, header_size, lambda h: h["inputs"][0].update(shape=CRASHING_SHAPE))
    message = refusal(body, SAGEMAKER_BINARY.format(header_size))
    assert message == ("input 'IMAGE' declares shape [1, 1000000000000] of FP32 (4000000000000 bytes) "
                       "but binary_data_size is 24")


def test_bytes_input_needs_at_least_four_bytes_per_declared_element():
    body, header_size = binary_request(("NAMES", np.array([b"a", b"b"], dtype=object)))  # 2 x (4 + 1) bytes
    check_inference_request(body, SAGEMAKER_BINARY.format(header_size))
    body, header_size = with_header(body, header_size, lambda h: h["inputs"][0].update(shape=[3]))
    message = refusal(body, SAGEMAKER_BINARY.format(header_size))
    assert message == ("input 'NAMES' declares shape [3] of BYTES (3 elements, at least 12 bytes) "
                       "but binary_data_size is 10")


@pytest.mark.parametrize("declared", ["0", "-5", "abc", "{size_plus_one}"])
def test_json_header_size_that_does_not_fit_the_body_is_refused(declared):
    body, header_size = binary_request(("IMAGE", np.zeros((2, 3), np.float32)))
    declared = declared.format(size_plus_one=len(body) + 1)
    message = refusal(body, SAGEMAKER_BINARY.format(declared))
    assert message == f"json-header-size={declared} does not fit the {len(body)}-byte body " \
                      f"(it must be a whole number from 1 to {len(body)})"


def test_kserve_inference_header_length_that_does_not_fit_the_body_is_refused():
    body, _ = binary_request(("IMAGE", np.zeros((2, 3), np.float32)))
    message = refusal(body, "application/octet-stream", inference_header_length=str(len(body) + 7))
    assert message.startswith(f"Inference-Header-Content-Length={len(body) + 7} does not fit the {len(body)}-byte")


def test_binary_bytes_other_than_the_declared_sizes_are_refused():
    body, header_size = binary_request(("IMAGE", np.zeros((2, 3), np.float32)))
    message = refusal(body[:-4], SAGEMAKER_BINARY.format(header_size))
    assert message == "the inputs declare 24 bytes of binary data but the body carries 20 after the JSON header"


def test_a_body_that_is_not_a_json_inference_request_is_refused():
    assert "is not valid JSON" in refusal(b'{"inputs": [', "application/json")
    assert "is not valid JSON" in refusal(b"[" * 100000, "application/json")
    assert refusal(b'{"input": []}', "application/json") == "the inference request has no 'inputs' list of objects"


def test_an_unknown_datatype_is_refused():
    assert refusal(json_request("X", "FLOAT", [1], [1.0]), "application/json").startswith(
        "input 'X' declares datatype 'FLOAT', not one of BOOL, UINT8")


# -- end to end: the crashing request through the local endpoint route -------------------
@pytest.fixture(scope="module")
def identity_endpoint(tmp_path_factory):
    """A throw-away SageMaker-mode tritonserver serving an identity model, behind the route."""
    from local_server.endpoint_route import EndpointRoute

    model_dir = identity_repository(tmp_path_factory.mktemp("guard_opt_ml") / "model")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in TEST_CREDENTIALS.items():
            patch.setenv(name, value)
        with TritonServer(model_dir, sagemaker_mode=True, sagemaker_default_model="identity") as container:
            with EndpointRoute({"guarded": container.sagemaker_url}) as route:
                yield container, route


TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}  # boto3 signs even requests to the local route


def identity_repository(folder):
    """A model repository holding the identity model alone."""
    (folder / "identity" / "1").mkdir(parents=True)
    (folder / "identity" / "config.pbtxt").write_text(IDENTITY_CONFIG)
    (folder / "identity" / "1" / "model.py").write_text(IDENTITY_MODEL)
    return folder


def invoke_raw(route, body: bytes, content_type: str) -> None:
    """boto3's invoke_endpoint with a body no client library would build."""
    import boto3

    runtime = boto3.client("sagemaker-runtime", endpoint_url=route.url, region_name="us-east-1")
    runtime.invoke_endpoint(EndpointName="guarded", Body=body, ContentType=content_type)


def identity(route, protocol: str, array: np.ndarray) -> np.ndarray:
    """The identity model's answer through boto3, the body built by the project's client."""
    endpoint = Route(protocol, route.url, endpoint_name="guarded", region="us-east-1")
    return infer(endpoint, "identity", {"INPUT0": array}, ["OUTPUT0"])["OUTPUT0"]


def test_crashing_json_shape_through_the_route_is_a_400_and_the_server_keeps_serving(identity_endpoint):
    from botocore.exceptions import ClientError

    container, route = identity_endpoint
    forwarded = route.requests_forwarded
    with pytest.raises(ClientError) as refused:
        invoke_raw(route, json_request("INPUT0", "UINT8", CRASHING_SHAPE, [1]), "application/json")
    error = refused.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "ValidationError"
    assert "input 'INPUT0' declares shape [1, 1000000000000]" in error["Error"]["Message"]
    assert route.requests_forwarded == forwarded
    assert container.is_running()
    assert requests.get(f"{container.sagemaker_url}/ping", timeout=10).status_code == 200
    good = np.array([[7, 8, 9]], np.uint8)
    np.testing.assert_array_equal(identity(route, "sagemaker-endpoint-json", good), good)


@pytest.mark.parametrize("protocol", ["sagemaker-endpoint", "sagemaker-endpoint-json"])
def test_binary_json_and_json_requests_of_the_project_client_pass_the_route_guard(identity_endpoint, protocol):
    _, route = identity_endpoint
    forwarded = route.requests_forwarded
    image_rows = np.arange(12, dtype=np.uint8).reshape(2, 6)
    np.testing.assert_array_equal(identity(route, protocol, image_rows), image_rows)
    assert route.requests_forwarded == forwarded + 1
