"""An S3 failure is one line naming the call and S3's reason, never a traceback: the commands as a user runs
them (deploy's upload, the dataset pipeline's --s3 upload) and the async result reads."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sagemaker_deploy.async_inference import _read_if_present
from sagemaker_deploy.aws import Aws, AwsError
from tests.aws_emulator import ROLE, apply_environment

BUCKET = "s3-errors"
MISSING = "no-such-bucket"


def run_cli(local_sagemaker, *arguments: str) -> subprocess.CompletedProcess:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    return subprocess.run([sys.executable, "-m", *arguments], env={**environment, **local_sagemaker.environment()},
                          capture_output=True, text=True, timeout=600)


def assert_one_line_naming_the_missing_bucket(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: s3.upload_file failed:")
    assert MISSING in result.stderr and "does not exist" in result.stderr


def test_deploy_to_a_missing_bucket_prints_one_line_and_no_traceback(cpu_repository, local_sagemaker):
    result = run_cli(local_sagemaker, "sagemaker_deploy", "--region", "us-east-1", "deploy", "--allow-cpu-target",
                     "--repository", str(cpu_repository), "--endpoint", "nobucket", "--bucket", MISSING,
                     "--role", ROLE)
    assert_one_line_naming_the_missing_bucket(result)


def test_dataset_upload_to_a_missing_bucket_prints_one_line_and_no_traceback(server, product_store, local_sagemaker,
                                                                             tmp_path):
    result = run_cli(local_sagemaker, "defect_data.pipeline", "--product", "pcb", "--products-store",
                     str(product_store), "--out", str(tmp_path / "dataset"), "--per-class", "2",
                     "--normals-per-kind", "2", "--url", server.http_url, "--s3", f"s3://{MISSING}/pcb")
    assert_one_line_naming_the_missing_bucket(result)


def test_async_result_read_is_none_while_absent_and_one_aws_error_line_when_s3_fails(local_sagemaker, monkeypatch):
    apply_environment(monkeypatch, local_sagemaker)
    aws = Aws("us-east-1", say=lambda line: None)
    assert _read_if_present(aws, f"s3://{BUCKET}/output/not-yet.out") is None
    local_sagemaker.s3().put_object(Bucket=BUCKET, Key="output/done.out", Body=b"answer", ContentType="text/plain")
    assert _read_if_present(aws, f"s3://{BUCKET}/output/done.out") == (b"answer", "text/plain")
    with pytest.raises(AwsError) as failure:
        _read_if_present(aws, f"s3://{MISSING}/output/any.out")
    assert str(failure.value).startswith("s3.get_object failed: NoSuchBucket:") and "\n" not in str(failure.value)
