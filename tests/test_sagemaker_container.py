"""Each variable SageMaker's Triton ``serve`` script reads, turned into the flag the script passes.

Source of the rules: docker/sagemaker/serve in triton-inference-server/server at v2.50.0
(docs/sagemaker-serve-variables.md). One real start shows the flags reach a real server.
"""
from __future__ import annotations

import pytest
import requests

from local_server import ServerError, TritonServer, sagemaker_arguments
from local_server.sagemaker_container import multi_model_repository, sagemaker_environment
from local_server.server import free_port

ALWAYS = ["--allow-sagemaker=true", "--allow-http=false", "--model-control-mode=explicit"]


@pytest.fixture()
def model_dir(tmp_path):
    """/opt/ml/model with one model folder, as SageMaker extracts a single-model archive."""
    (tmp_path / "model" / "classifier" / "1").mkdir(parents=True)
    return tmp_path / "model"


def flags(model_dir, **env) -> list[str]:
    return sagemaker_arguments(model_dir, env, gpus=0)


@pytest.mark.parametrize("variable, value, flag", [
    ("SAGEMAKER_TRITON_DISABLE_MODEL_NAMESPACING", "false", "--model-namespacing=false"),
    ("SAGEMAKER_BIND_TO_PORT", "8123", "--sagemaker-port=8123"),
    ("SAGEMAKER_SAFE_PORT_RANGE", "9000-9100", "--sagemaker-safe-port-range=9000-9100"),
    ("SAGEMAKER_TRITON_ALLOW_GRPC", "true", "--allow-grpc=true"),
    ("SAGEMAKER_TRITON_ALLOW_METRICS", "true", "--allow-metrics=true"),
    ("SAGEMAKER_TRITON_METRICS_PORT", "8302", "--metrics-port=8302"),
    ("SAGEMAKER_TRITON_GRPC_PORT", "8301", "--grpc-port=8301"),
    ("SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT", "4", "--buffer-manager-thread-count=4"),
    ("SAGEMAKER_TRITON_THREAD_COUNT", "6", "--sagemaker-thread-count=6"),
    ("SAGEMAKER_TRITON_LOG_VERBOSE", "false", "--log-verbose=false"),
    ("SAGEMAKER_TRITON_LOG_INFO", "false", "--log-info=false"),
    ("SAGEMAKER_TRITON_LOG_WARNING", "false", "--log-warning=false"),
    ("SAGEMAKER_TRITON_LOG_ERROR", "false", "--log-error=false"),
    ("SAGEMAKER_TRITON_SHM_DEFAULT_BYTE_SIZE", "33554432", "--backend-config=python,shm-default-byte-size=33554432"),
    ("SAGEMAKER_TRITON_SHM_GROWTH_BYTE_SIZE", "2097152", "--backend-config=python,shm-growth-byte-size=2097152"),
    ("SAGEMAKER_TRITON_TENSORFLOW_VERSION", "2", "--backend-config=tensorflow,version=2"),
])
def test_each_serve_variable_becomes_the_scripts_flag(model_dir, variable, value, flag):
    assert flag not in flags(model_dir)
    assert flag in flags(model_dir, **{variable: value})


def test_default_model_name_picks_the_one_model_loaded(model_dir):
    (model_dir / "detector").mkdir()
    args = flags(model_dir, SAGEMAKER_TRITON_DEFAULT_MODEL_NAME="detector")
    assert [arg for arg in args if arg.startswith("--load-model")] == ["--load-model=detector"]


def test_unset_or_empty_variables_give_the_scripts_defaults(model_dir):
    expected = ALWAYS + [f"--model-repository={model_dir}", "--model-namespacing=true", "--allow-grpc=false",
                         "--allow-metrics=false", "--log-verbose=true",
                         "--backend-config=python,shm-default-byte-size=16777216",
                         "--backend-config=python,shm-growth-byte-size=1048576", "--load-model=classifier"]
    assert flags(model_dir) == expected
    assert flags(model_dir, SAGEMAKER_TRITON_ALLOW_GRPC="", SAGEMAKER_TRITON_LOG_VERBOSE="") == expected


def test_model_load_gpu_limit_is_one_flag_per_gpu_as_nvidia_smi_counts_them(model_dir):
    env = {"SAGEMAKER_TRITON_MODEL_LOAD_GPU_LIMIT": "0.8"}
    args = sagemaker_arguments(model_dir, env, gpus=2)
    assert args[args.index("--model-load-gpu-limit"):][:4] == ["--model-load-gpu-limit", "0:0.8",
                                                                 "--model-load-gpu-limit", "1:0.8"]
    assert "--model-load-gpu-limit" not in sagemaker_arguments(model_dir, env, gpus=0)


def test_additional_args_are_split_and_come_before_the_default_model(model_dir):
    args = flags(model_dir, SAGEMAKER_TRITON_ADDITIONAL_ARGS="--load-model=extra  --strict-readiness=false")
    assert args[-3:] == ["--load-model=extra", "--strict-readiness=false", "--load-model=classifier"]


def test_multi_model_mode_has_no_default_model_and_an_empty_placeholder_repository(model_dir):
    (model_dir / "second").mkdir()  # two folders and no default: fine in multi-model mode, an error otherwise
    args = flags(model_dir, SAGEMAKER_MULTI_MODEL="true")
    assert f"--model-repository={multi_model_repository()}" in args and multi_model_repository().is_dir()
    assert not [arg for arg in args if arg.startswith("--load-model")]
    assert "--model-control-mode=explicit" in args and "--model-namespacing=true" in args
    with pytest.raises(ServerError, match="holds 2 model folders"):
        flags(model_dir, SAGEMAKER_MULTI_MODEL="false")


def test_multi_model_mode_skips_the_top_level_config_check(model_dir):
    (model_dir / "config.pbtxt").write_text('name: "classifier"')
    with pytest.raises(ServerError, match="config.pbtxt at its top level"):
        flags(model_dir)
    assert "--load-model=classifier" not in flags(model_dir, SAGEMAKER_MULTI_MODEL="true")


def test_inference_type_is_checked_as_the_script_does_and_left_to_the_server(model_dir):
    for accepted in ("infer", "generate", "generate_stream"):
        assert flags(model_dir, SAGEMAKER_TRITON_INFERENCE_TYPE=accepted) == flags(model_dir)
    with pytest.raises(ServerError, match="Invalid SAGEMAKER_TRITON_INFERENCE_TYPE 'predict'"):
        flags(model_dir, SAGEMAKER_TRITON_INFERENCE_TYPE="predict")


@pytest.mark.parametrize("env, seen", [
    ({}, None),  # the script's value is not exported: tritonserver uses its own default, "ready"
    ({"SAGEMAKER_TRITON_PING_MODE": "x"}, "ready"),
    ({"SAGEMAKER_TRITON_PING_MODE": "x", "SAGEMAKER_MULTI_MODEL": "true"}, "live"),
    ({"SAGEMAKER_TRITON_PING_MODE": "x", "SAGEMAKER_TRITON_OVERRIDE_PING_MODE": "live"}, "live"),
    ({"SAGEMAKER_TRITON_OVERRIDE_PING_MODE": "live"}, None),
])
def test_ping_mode_reaches_tritonserver_only_where_the_script_exports_it(model_dir, env, seen):
    assert sagemaker_environment(model_dir, env).get("SAGEMAKER_TRITON_PING_MODE") == seen


def test_the_only_model_folder_is_exported_as_the_default_model(model_dir):
    assert sagemaker_environment(model_dir, {})["SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"] == "classifier"
    multi_model = sagemaker_environment(model_dir, {"SAGEMAKER_MULTI_MODEL": "true"})
    assert "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME" not in multi_model


def test_grpc_and_metrics_ports_open_when_allowed_in_multi_model_mode(model_dir):
    import tritonclient.grpc as grpcclient

    grpc_port, metrics_port = free_port(), free_port()
    env = {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_TRITON_ALLOW_GRPC": "true",
           "SAGEMAKER_TRITON_GRPC_PORT": str(grpc_port), "SAGEMAKER_TRITON_ALLOW_METRICS": "true",
           "SAGEMAKER_TRITON_METRICS_PORT": str(metrics_port)}
    loopback = ["--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"]
    with TritonServer(model_dir, sagemaker_mode=True, sagemaker_env=env, extra_args=loopback) as container:
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as grpc:
            assert grpc.is_server_live()
        metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert metrics.status_code == 200 and "nv_" in metrics.text
        listing = requests.get(f"{container.sagemaker_url}/models", timeout=10)
        assert listing.status_code == 200 and listing.json()["models"] == []
