"""The server started exactly as SageMaker's Triton container starts it."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import requests

from builders import ensemble_dali_inception as ensemble
from clients.classify import classify_scores
from clients.protocols import Route
from local_server import ServerError, TritonServer, sagemaker_arguments


@pytest.fixture(scope="module")
def opt_ml_model(cpu_repository, tmp_path_factory):
    """The repository laid out as SageMaker extracts model.tar.gz into /opt/ml/model."""
    model_dir = tmp_path_factory.mktemp("opt_ml") / "model"
    shutil.copytree(cpu_repository, model_dir)
    return model_dir


def test_sagemaker_mode_serves_invocations_with_only_the_sagemaker_frontend(opt_ml_model, server, photos):
    image = [photos["coffee"]]
    expected = classify_scores(Route("http-binary", server.http_url), image)
    with TritonServer(opt_ml_model, sagemaker_mode=True, sagemaker_default_model=ensemble.NAME) as sagemaker:
        assert requests.get(f"{sagemaker.sagemaker_url}/ping", timeout=10).status_code == 200
        for protocol in ("sagemaker-json", "sagemaker-binary"):
            np.testing.assert_allclose(classify_scores(Route(protocol, sagemaker.sagemaker_url), image),
                                       expected, rtol=1e-6)
        assert sagemaker.http_port is None and sagemaker.grpc_port is None
        assert "--allow-http=false" in sagemaker.command()


def test_sagemaker_arguments_load_only_the_default_model_with_explicit_control(opt_ml_model):
    args = sagemaker_arguments(opt_ml_model, {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": ensemble.NAME,
                                              "SAGEMAKER_TRITON_ADDITIONAL_ARGS": "--load-model=extra"})
    assert "--model-control-mode=explicit" in args
    # the serve script appends the additional arguments before the default model's --load-model
    assert [a for a in args if a.startswith("--load-model")] == ["--load-model=extra", f"--load-model={ensemble.NAME}"]


def test_sagemaker_start_up_refuses_a_top_level_config_pbtxt(cpu_repository, tmp_path):
    single = tmp_path / "model"
    shutil.copytree(cpu_repository / ensemble.NAME, single)
    with pytest.raises(ServerError, match="config.pbtxt at its top level"):
        sagemaker_arguments(single, {})


def test_sagemaker_start_up_needs_a_default_model_that_exists(opt_ml_model):
    with pytest.raises(ServerError, match="SAGEMAKER_TRITON_DEFAULT_MODEL_NAME=nope but"):
        sagemaker_arguments(opt_ml_model, {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "nope"})
    folders = len([p for p in opt_ml_model.iterdir() if p.is_dir()])
    with pytest.raises(ServerError, match=rf"is not set and .* holds {folders} model folders"):
        sagemaker_arguments(opt_ml_model, {})


@pytest.fixture(scope="module")
def endpoint(opt_ml_model, monkeypatch_module):
    """A SageMaker-mode server behind the local /endpoints/<name>/invocations route, reached by boto3."""
    from local_server.endpoint_route import EndpointRoute

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch_module.setenv(name, value)
    with TritonServer(opt_ml_model, sagemaker_mode=True, sagemaker_default_model=ensemble.NAME) as sagemaker:
        with EndpointRoute({"vision-endpoint": sagemaker.sagemaker_url}) as route:
            yield route


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def endpoint_route(route, name: str = "vision-endpoint", protocol: str = "sagemaker-endpoint") -> Route:
    return Route(protocol, route.url, endpoint_name=name, region="us-east-1")


@pytest.mark.parametrize("protocol", ["sagemaker-endpoint", "sagemaker-endpoint-json"])
def test_boto3_invoke_endpoint_json_and_binary_give_the_http_result(endpoint, server, photos, protocol):
    images = [photos["chelsea"], photos["rocket"]]
    np.testing.assert_allclose(classify_scores(endpoint_route(endpoint, protocol=protocol), images),
                               classify_scores(Route("http-binary", server.http_url), images), rtol=1e-6)


def test_body_over_the_6_mb_real_time_limit_is_refused_before_sending(endpoint):
    from clients.protocols import RequestError

    seen = endpoint.requests_seen
    with pytest.raises(RequestError, match="over the 6 MiB limit of a SageMaker real-time endpoint"):
        classify_scores(endpoint_route(endpoint), [b"\xff\xd8" + bytes(7 * 2**20)])
    assert endpoint.requests_seen == seen


def test_bad_image_through_the_endpoint_is_a_model_error_with_tritons_message(endpoint, photos):
    from clients.protocols import RequestError

    with pytest.raises(RequestError, match=r"ModelError.*could not decode the image data"):
        classify_scores(endpoint_route(endpoint), [photos["coffee"][:5000]])
    with pytest.raises(RequestError, match="Endpoint no-such-endpoint of account 123456789012 not found"):
        classify_scores(endpoint_route(endpoint, "no-such-endpoint"), [photos["coffee"]])


def test_missing_credentials_give_one_clear_line_and_no_traceback(endpoint, photos, tmp_path):
    import os
    import subprocess
    import sys

    image = tmp_path / "coffee.jpg"
    image.write_bytes(photos["coffee"])
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    result = subprocess.run([sys.executable, "-m", "clients.classify", str(image), "--protocol", "sagemaker-endpoint",
                             "--endpoint-name", "vision-endpoint", "--url", endpoint.url, "--region", "us-east-1"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
