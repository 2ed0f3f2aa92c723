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
    assert [a for a in args if a.startswith("--load-model")] == [f"--load-model={ensemble.NAME}", "--load-model=extra"]


def test_sagemaker_start_up_refuses_a_top_level_config_pbtxt(cpu_repository, tmp_path):
    single = tmp_path / "model"
    shutil.copytree(cpu_repository / ensemble.NAME, single)
    with pytest.raises(ServerError, match="config.pbtxt at its top level"):
        sagemaker_arguments(single, {})


def test_sagemaker_start_up_needs_a_default_model_that_exists(opt_ml_model):
    with pytest.raises(ServerError, match="SAGEMAKER_TRITON_DEFAULT_MODEL_NAME=nope but"):
        sagemaker_arguments(opt_ml_model, {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "nope"})
    with pytest.raises(ServerError, match=r"is not set and .* holds 8 model folders"):
        sagemaker_arguments(opt_ml_model, {})
