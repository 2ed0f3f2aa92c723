"""Deploy scripts against a local SageMaker: moto's server for the API, real tritonservers as containers."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from builders import ensemble_dali_inception, ensemble_lama
from builders.config import parse, render
from clients.classify import classify_scores
from clients.inpaint import png_bytes
from clients.protocols import Route
from sagemaker_deploy.__main__ import main as deploy_main
from sagemaker_deploy.aws import Aws
from sagemaker_deploy.deploy import DEFAULT_TRITON_VERSION, DeployFailed, DeployRequest, container_environment, \
    deploy, request_environment, teardown, update
from sagemaker_deploy.package import PackageError, make_archive, required_models
from tests.aws_emulator import INSTANCE, ROLE

BUCKET = "vision-models"


def request(repository, tmp_path, endpoint="vision", **overrides) -> DeployRequest:
    fields = dict(repository=repository, endpoint=endpoint, bucket=BUCKET, role=ROLE, region="us-east-1",
                  workdir=tmp_path, poll_s=0.5, wait_timeout_s=180, instance_type=INSTANCE,
                  allow_cpu_target=True)  # the emulator's containers have only the python backend
    return DeployRequest(**{**fields, **overrides})


def broken_copy(repository, target):
    """A repository whose classifier step cannot start: passes packaging, fails to load in the container."""
    shutil.copytree(repository, target)
    (target / "inception_onnx" / "1" / "model.py").write_text("raise RuntimeError('broken on purpose')\n")
    return target


def names(aws: Aws, operation: str, key: str, field: str) -> list[str]:
    return [item[field] for item in aws.call("sagemaker", operation)[key]]


def test_archive_holds_the_needed_model_folders_at_its_root(cpu_repository, tmp_path):
    archive = tmp_path / "model.tar.gz"
    packed, bls = make_archive(cpu_repository, ensemble_dali_inception.NAME, archive)
    with tarfile.open(archive) as tar:
        roots = {member.name.split("/")[0] for member in tar.getmembers()}
        assert "config.pbtxt" not in {member.name for member in tar.getmembers()}
    assert roots == set(packed) == {"ensemble_dali_inception", "dali_guard", "dali", "inception_onnx"} and bls == []


def test_packaging_names_every_missing_model_and_artifact(cpu_repository, tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(cpu_repository, repository)
    (repository / "lama" / "1" / "model.onnx").unlink()
    shutil.rmtree(repository / "lama_finish")
    with pytest.raises(PackageError, match=r"'lama_finish' is needed but .* does not exist"):
        make_archive(repository, ensemble_lama.NAME, tmp_path / "model.tar.gz")
    shutil.copytree(cpu_repository / "lama_finish", repository / "lama_finish")
    with pytest.raises(PackageError, match=r"lama: .*model.onnx is missing"):
        make_archive(repository, ensemble_lama.NAME, tmp_path / "model.tar.gz")
    assert not (tmp_path / "model.tar.gz").exists()


def test_models_called_through_bls_are_packed_and_loaded_explicitly(cpu_repository, tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(cpu_repository, repository)
    config_path = repository / "lama_finish" / "config.pbtxt"
    config = parse(config_path.read_text())
    config.parameters["bls_models"].string_value = "ensemble_dali_inception"
    config_path.write_text(render(config))
    needed, loaded, bls = required_models(repository, ensemble_lama.NAME)
    assert bls == ["ensemble_dali_inception"] and "dali" in needed and "dali" not in loaded
    environment = container_environment(ensemble_lama.NAME, bls)
    assert environment["SAGEMAKER_TRITON_ADDITIONAL_ARGS"] == "--load-model=ensemble_dali_inception"


@pytest.mark.parametrize(("triton_version", "async_output", "limited"), [
    ("26.05", "", True), ("25.09", "", False), ("24.09", "", False), ("26.05", "s3://b/async", False)])
def test_a_real_time_container_limits_bodies_to_6_mib_where_its_triton_applies_that_to_the_sagemaker_port(
        cpu_repository, tmp_path, triton_version, async_output, limited):
    # Triton 2.68 (server PR #8686) applies --http-max-input-size to the SageMaker port: 26.05 ships 2.69, 25.09
    # ships 2.61. An async endpoint takes bodies of up to 1 GB from S3: no limit.
    environment = request_environment(request(cpu_repository, tmp_path, triton_version=triton_version,
                                              async_output=async_output, thread_count=3,
                                              buffer_manager_thread_count=5), ensemble_lama.NAME, ["lama_decode"])
    words = environment["SAGEMAKER_TRITON_ADDITIONAL_ARGS"].split()
    assert words[0] == "--load-model=lama_decode"
    assert ("--http-max-input-size=6291456" in words) == limited
    assert (environment["SAGEMAKER_TRITON_THREAD_COUNT"], environment["SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT"]) \
        == ("3", "5")  # two knobs, two options


def test_dry_run_prints_every_call_and_creates_nothing(cpu_repository, tmp_path, aws, capsys):
    assert deploy_main(["--dry-run", "--region", "us-east-1", "deploy", "--allow-cpu-target",
                        "--repository", str(cpu_repository),
                        "--endpoint", "dry", "--bucket", BUCKET, "--role", ROLE]) == 0
    printed = capsys.readouterr().out
    for call in ("s3.upload_file(", "sagemaker.create_model(", "sagemaker.create_endpoint_config(",
                 "sagemaker.create_endpoint("):
        assert f"[dry run] {call}" in printed
    assert f"sagemaker-tritonserver:{DEFAULT_TRITON_VERSION}-py3" in printed and "ml.g5.xlarge" in printed
    assert names(aws, "list_models", "Models", "ModelName") == []
    assert "Contents" not in aws.call("s3", "list_objects_v2", Bucket=BUCKET)


def test_deploy_invoke_update_and_teardown_on_the_local_sagemaker(cpu_repository, tmp_path, aws, server, photos):
    first = deploy(aws, request(cpu_repository, tmp_path))
    endpoint = Route("sagemaker-endpoint", "", endpoint_name="vision", region="us-east-1")
    expected = classify_scores(Route("http-binary", server.http_url), [photos["chelsea"]])
    np.testing.assert_allclose(classify_scores(endpoint, [photos["chelsea"]]), expected, rtol=1e-6)
    model = aws.call("sagemaker", "describe_model", ModelName=first.name)["PrimaryContainer"]
    assert model["Environment"]["SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"] == ensemble_dali_inception.NAME
    assert model["Image"].endswith(f"sagemaker-tritonserver:{DEFAULT_TRITON_VERSION}-py3")

    second = update(aws, request(cpu_repository, tmp_path))
    assert aws.call("sagemaker", "describe_endpoint", EndpointName="vision")["EndpointConfigName"] == second.name
    keys = aws.pages("s3", "list_objects_v2", "Contents", Bucket=BUCKET)
    with pytest.raises(DeployFailed, match="endpoint vision already exists"):
        deploy(aws, request(cpu_repository, tmp_path))  # a deploy never touches a live endpoint
    assert aws.pages("s3", "list_objects_v2", "Contents", Bucket=BUCKET) == keys
    assert names(aws, "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName") == [second.name]
    np.testing.assert_allclose(classify_scores(endpoint, [photos["chelsea"]]), expected, rtol=1e-6)

    removed = teardown(aws, "vision", delete_artifacts_in=f"s3://{BUCKET}/visual-inspection-triton")
    assert "endpoint vision" in removed and f"model {second.name}" in removed
    assert names(aws, "list_endpoints", "Endpoints", "EndpointName") == []
    assert "Contents" not in aws.call("s3", "list_objects_v2", Bucket=BUCKET)


def test_failed_endpoint_reports_reason_and_log_group_and_removes_what_it_created(cpu_repository, tmp_path, aws,
                                                                                  local_sagemaker):
    broken = broken_copy(cpu_repository, tmp_path / "broken")
    with pytest.raises(DeployFailed, match=r"(?s)endpoint broken failed: The primary container for production "
                                           r"variant AllTraffic did not pass the ping health check.*"
                                           r"CloudWatch log group /aws/sagemaker/Endpoints/broken"):
        deploy(aws, request(broken, tmp_path, endpoint="broken"))
    assert "inception_onnx" in local_sagemaker.container_logs("broken")  # the cause, where SageMaker logs it
    assert names(aws, "list_endpoints", "Endpoints", "EndpointName") == []
    assert names(aws, "list_models", "Models", "ModelName") == []
    assert names(aws, "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName") == []
    assert "Contents" not in aws.call("s3", "list_objects_v2", Bucket=BUCKET)


def test_failed_update_rolls_back_and_the_old_version_keeps_serving(cpu_repository, tmp_path, aws, photos,
                                                                   local_sagemaker):
    first = deploy(aws, request(cpu_repository, tmp_path, endpoint="steady"))
    with pytest.raises(DeployFailed, match="(?s)update did not take.*did not pass the ping health check"):
        update(aws, request(broken_copy(cpu_repository, tmp_path / "broken"), tmp_path, endpoint="steady"))
    described = aws.call("sagemaker", "describe_endpoint", EndpointName="steady")
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", first.name)
    assert local_sagemaker.status_history["steady"][-3:] == ["Updating", "RollingBack", "InService"]
    assert names(aws, "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName") == [first.name]
    route = Route("sagemaker-endpoint", "", endpoint_name="steady", region="us-east-1")
    assert classify_scores(route, [photos["coffee"]]).shape == (1, 1001)
    teardown(aws, "steady", delete_artifacts_in=f"s3://{BUCKET}/visual-inspection-triton")


def test_s3_upload_failure_is_one_clear_line_and_nothing_is_created(cpu_repository, aws, capsys):
    assert deploy_main(["--region", "us-east-1", "deploy", "--allow-cpu-target", "--repository", str(cpu_repository),
                        "--endpoint",
                        "nobucket", "--bucket", "no-such-bucket", "--role", ROLE]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: s3.upload_file failed:") and "no-such-bucket" in error
    assert "\n" not in error
    assert names(aws, "list_models", "Models", "ModelName") == []


def test_missing_credentials_are_one_line_not_a_traceback(cpu_repository, local_sagemaker, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=local_sagemaker.moto_url, AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
    result = subprocess.run([sys.executable, "-m", "sagemaker_deploy", "--region", "us-east-1", "teardown"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID "
                                     "and AWS_SECRET_ACCESS_KEY")


def test_async_lama_endpoint_scales_to_zero_and_answers_through_s3(cpu_repository, tmp_path, aws):
    output = f"s3://{BUCKET}/lama-async"
    assert deploy_main(["--region", "us-east-1", "deploy", "--allow-cpu-target", "--repository", str(cpu_repository),
                        "--endpoint",
                        "lama", "--bucket", BUCKET, "--role", ROLE, "--default-model", ensemble_lama.NAME,
                        "--async-output", output, "--autoscale-to-zero", "--poll-s", "0.5",
                        "--instance-type", INSTANCE]) == 0
    config_name = aws.call("sagemaker", "describe_endpoint", EndpointName="lama")["EndpointConfigName"]
    async_config = aws.call("sagemaker", "describe_endpoint_config", EndpointConfigName=config_name)[
        "AsyncInferenceConfig"]
    assert async_config["OutputConfig"]["S3OutputPath"] == f"{output}/output"
    assert async_config["ClientConfig"]["MaxConcurrentInvocationsPerInstance"] == 4
    targets = aws.call("application-autoscaling", "describe_scalable_targets", ServiceNamespace="sagemaker")
    assert targets["ScalableTargets"][0]["MinCapacity"] == 0
    alarms = aws.call("cloudwatch", "describe_alarms")["MetricAlarms"]
    assert alarms[0]["MetricName"] == "HasBacklogWithoutCapacity"

    board = np.full((48, 64, 3), 90, np.uint8)
    board[::4] = 200
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 255
    (tmp_path / "board.png").write_bytes(png_bytes(board))
    (tmp_path / "mask.png").write_bytes(png_bytes(mask))
    assert deploy_main(["--region", "us-east-1", "invoke-async", "--endpoint", "lama", "--input-prefix",
                        f"s3://{BUCKET}/lama-async/input", str(tmp_path / "board.png"), str(tmp_path / "mask.png"),
                        "-o", str(tmp_path / "out.png"), "--poll-s", "0.5", "--timeout-s", "120"]) == 0
    result = np.asarray(Image.open(tmp_path / "out.png"))
    assert result.shape == board.shape and np.array_equal(result[mask == 0], board[mask == 0])
    teardown(aws, "lama", delete_artifacts_in=f"s3://{BUCKET}/visual-inspection-triton")
