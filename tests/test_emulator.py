"""The local SageMaker plays SageMaker's rules, no kinder: one test per rule.

One real container (the ``lama_prepare`` python model, quick to load) serves an async
endpoint; failures need no tritonserver at all (the serve script's own refusal).
"""
from __future__ import annotations

import io
import json
import tarfile
import time

import boto3
import botocore.exceptions
import numpy as np
import pytest

from clients.protocols import sagemaker_body
from local_server.endpoint_route import REALTIME_BODY_LIMIT, TIMED_OUT, EndpointRoute
from moto.sagemaker.models import SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse
from tests.aws_emulator import CREDENTIALS, PING_FAILED, LocalSageMaker, split_s3

BUCKET = "emulator-tests"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
MODEL = "lama_prepare"
ASYNC_PAYLOAD_LIMIT = 8 * 2**20  # small stand-in for the 1 GB limit
ASYNC_TIMEOUT_S = 0.01  # small stand-in for the 900 s default of InvocationTimeoutSeconds
PING_REASON = PING_FAILED.format(variant="AllTraffic")
MISSING_DEFAULT = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "nope"}  # the serve script exits: no /ping ever


def client(emulator: LocalSageMaker, service: str):
    url = emulator.route.url if service == "sagemaker-runtime" else emulator.moto_url
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def release(emulator, name: str, model_url: str, environment: dict, async_output: str = "") -> str:
    """A SageMaker model and endpoint config serving the archive at model_url."""
    sagemaker = client(emulator, "sagemaker")
    sagemaker.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": "sagemaker-tritonserver:24.09-py3", "ModelDataUrl": model_url, "Environment": environment})
    config = {"EndpointConfigName": name, "ProductionVariants": [{
        "VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.g4dn.xlarge", "InitialInstanceCount": 1}]}
    if async_output:
        config["AsyncInferenceConfig"] = {"OutputConfig": {"S3OutputPath": f"{async_output}/output",
                                                           "S3FailurePath": f"{async_output}/failure"}}
    sagemaker.create_endpoint_config(**config)
    return name


def wait_for_status(emulator, endpoint: str, wanted: set[str], timeout_s: float = 180) -> dict:
    sagemaker = client(emulator, "sagemaker")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described = sagemaker.describe_endpoint(EndpointName=endpoint)
        if described["EndpointStatus"] in wanted:
            return described
        time.sleep(0.2)
    raise AssertionError(f"{endpoint} still {described['EndpointStatus']} after {timeout_s} s")


@pytest.fixture(scope="module")
def emulator(cpu_repository, tmp_path_factory):
    local = LocalSageMaker(tmp_path_factory.mktemp("emulator"), async_payload_limit=ASYNC_PAYLOAD_LIMIT,
                           async_invocation_timeout_s=ASYNC_TIMEOUT_S).start()
    s3 = local.s3()
    s3.create_bucket(Bucket=BUCKET)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(cpu_repository / MODEL, arcname=MODEL)
    s3.put_object(Bucket=BUCKET, Key="model.tar.gz", Body=archive.getvalue())
    yield local
    local.stop()


@pytest.fixture(scope="module")
def endpoint(emulator):
    """An async endpoint in service; no default model set: the script picks the only folder."""
    config = release(emulator, "steady-1", f"s3://{BUCKET}/model.tar.gz", {}, async_output=f"s3://{BUCKET}/async")
    client(emulator, "sagemaker").create_endpoint(EndpointName="steady", EndpointConfigName=config)
    assert wait_for_status(emulator, "steady", {"InService", "Failed"})["EndpointStatus"] == "InService"
    return "steady"


def prepare_request(side: int = 1024, binary: bool = True, with_mask: bool = True) -> tuple[bytes, str]:
    """A lama_prepare request: an image and (unless told otherwise) its mask."""
    inputs = {"DECODED_IMAGE": np.full((1, side, side, 3), 120, np.uint8)}
    if with_mask:
        inputs["DECODED_MASK"] = np.zeros((1, side, side, 1), np.uint8)
    return sagemaker_body(inputs, ["image", "mask", "SIZE"], binary=binary)


def incomplete_request() -> tuple[bytes, str]:
    """Well-formed, but without the mask input: the container itself refuses it (400)."""
    return prepare_request(16, binary=False, with_mask=False)


def test_stop_restores_the_moto_classes_it_patched(tmp_path):
    patched = [(SageMakerModelBackend, "create_endpoint"), (SageMakerModelBackend, "update_endpoint"),
               (SageMakerModelBackend, "delete_endpoint"), (SageMakerResponse, "update_endpoint")]
    before = {(cls, name): cls.__dict__.get(name) for cls, name in patched}
    local = LocalSageMaker(tmp_path).start()
    assert all(cls.__dict__.get(name) is not before[(cls, name)] for cls, name in patched)
    local.stop()
    assert {(cls, name): cls.__dict__.get(name) for cls, name in patched} == before


def test_endpoint_that_fails_its_ping_has_sagemakers_reason_and_the_cause_in_its_log_group(emulator):
    config = release(emulator, "broken-1", f"s3://{BUCKET}/model.tar.gz", MISSING_DEFAULT)
    client(emulator, "sagemaker").create_endpoint(EndpointName="broken", EndpointConfigName=config)
    described = wait_for_status(emulator, "broken", {"InService", "Failed"})
    assert (described["EndpointStatus"], described["FailureReason"]) == ("Failed", PING_REASON)
    assert emulator.status_history["broken"] == ["Creating", "Failed"]
    assert "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME=nope" in emulator.container_logs("broken")
    assert emulator.log_group("broken").parts[-4:] == ("aws", "sagemaker", "Endpoints", "broken")


def test_failed_update_goes_updating_rolling_back_in_service_with_the_reason(emulator, endpoint):
    config = release(emulator, "steady-2", f"s3://{BUCKET}/model.tar.gz", MISSING_DEFAULT,
                     async_output=f"s3://{BUCKET}/async")
    seen = len(emulator.status_history[endpoint])
    client(emulator, "sagemaker").update_endpoint(EndpointName=endpoint, EndpointConfigName=config)
    described = wait_for_status(emulator, endpoint, {"InService", "Failed"})
    assert emulator.status_history[endpoint][seen:] == ["Updating", "RollingBack", "InService"]
    assert (described["EndpointConfigName"], described["FailureReason"]) == ("steady-1", PING_REASON)
    output, failure = submit(emulator, endpoint, *prepare_request(64), InvocationTimeoutSeconds=60)
    assert outcome(emulator, output, failure)[0] == "output"  # the old configuration still serves


def test_real_time_body_over_6_mib_is_refused_with_413_before_the_container(emulator, endpoint):
    runtime = client(emulator, "sagemaker-runtime")
    forwarded = emulator.route.requests_forwarded
    with pytest.raises(botocore.exceptions.ClientError, match=rf"\(413\).*exceeded {REALTIME_BODY_LIMIT} bytes"):
        runtime.invoke_endpoint(EndpointName=endpoint, ContentType="application/json",
                                Body=b" " * (REALTIME_BODY_LIMIT + 1))
    assert emulator.route.requests_forwarded == forwarded
    body, content_type = prepare_request(16, binary=False)  # JSON padded to exactly the limit: served
    answer = runtime.invoke_endpoint(EndpointName=endpoint, ContentType=content_type,
                                     Body=body + b" " * (REALTIME_BODY_LIMIT - len(body)))
    assert "outputs" in json.loads(answer["Body"].read())
    assert emulator.route.requests_forwarded == forwarded + 1


def test_real_time_container_error_is_a_model_error_pointing_at_the_log_group(emulator, endpoint):
    runtime = client(emulator, "sagemaker-runtime")
    body, content_type = incomplete_request()
    with pytest.raises(runtime.exceptions.ModelError) as raised:
        runtime.invoke_endpoint(EndpointName=endpoint, ContentType=content_type, Body=body)
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424 and error["OriginalStatusCode"] == 400
    assert error["Error"]["Message"].startswith("Received client error (400) from primary with message \"")
    assert "#logEventViewer:group=/aws/sagemaker/Endpoints/steady in account 123456789012" in error["Error"]["Message"]


def test_real_time_request_past_the_time_limit_gets_sagemakers_timeout_error(emulator, endpoint):
    body, content_type = prepare_request()
    with EndpointRoute({endpoint: emulator.route.endpoints[endpoint]}, timeout_s=0.01) as slow_route:
        runtime = boto3.client("sagemaker-runtime", endpoint_url=slow_route.url, region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
        started = time.monotonic()
        with pytest.raises(runtime.exceptions.ModelError) as raised:
            runtime.invoke_endpoint(EndpointName=endpoint, ContentType=content_type, Body=body)
    assert time.monotonic() - started < 5
    message = raised.value.response["Error"]["Message"]
    assert message.startswith(f"Received server error (0) from primary with message \"{TIMED_OUT}\"")


def submit(emulator, endpoint: str, body: bytes, content_type: str, **options) -> tuple[str, str]:
    key = f"input/{time.monotonic_ns()}"
    emulator.s3().put_object(Bucket=BUCKET, Key=key, Body=body)
    answer = client(emulator, "sagemaker-runtime").invoke_endpoint_async(
        EndpointName=endpoint, InputLocation=f"s3://{BUCKET}/{key}", ContentType=content_type, **options)
    return answer["OutputLocation"], answer["FailureLocation"]


def outcome(emulator, output: str, failure: str, timeout_s: float = 60) -> tuple[str, bytes]:
    """("output" or "failure", the object's body), whichever the endpoint wrote."""
    s3 = emulator.s3()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for kind, location in (("output", output), ("failure", failure)):
            bucket, key = split_s3(location)
            try:
                return kind, s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except s3.exceptions.NoSuchKey:
                pass
        time.sleep(0.2)
    raise AssertionError(f"neither {output} nor {failure} written after {timeout_s} s")


def test_async_payload_over_the_limit_is_written_as_a_failure(emulator, endpoint):
    output, failure = submit(emulator, endpoint, b" " * (ASYNC_PAYLOAD_LIMIT + 1), "application/json")
    kind, body = outcome(emulator, output, failure)
    assert kind == "failure" and f"over the {ASYNC_PAYLOAD_LIMIT} byte limit" in body.decode()


def test_async_processing_past_the_invocation_timeout_is_written_as_a_failure(emulator, endpoint):
    output, failure = submit(emulator, endpoint, *prepare_request())
    kind, body = outcome(emulator, output, failure)
    assert kind == "failure" and TIMED_OUT in body.decode()


def test_async_container_error_is_written_as_a_failure_with_the_containers_answer(emulator, endpoint):
    output, failure = submit(emulator, endpoint, *incomplete_request(), InvocationTimeoutSeconds=60)
    kind, body = outcome(emulator, output, failure)
    assert kind == "failure" and "DECODED_MASK" in json.loads(body)["error"]


def test_any_exception_while_processing_async_is_written_as_a_failure(emulator, endpoint):
    answer = client(emulator, "sagemaker-runtime").invoke_endpoint_async(
        EndpointName=endpoint, InputLocation=f"s3://{BUCKET}/no/such/input", ContentType="application/json")
    kind, body = outcome(emulator, answer["OutputLocation"], answer["FailureLocation"])
    assert kind == "failure" and body.decode().startswith("InternalFailure: ClientError")


def test_create_endpoint_for_a_name_already_taken_is_refused_as_sagemaker_refuses_it(emulator, endpoint):
    """moto 5.2.5 silently replaces the endpoint; SageMaker answers a ValidationException."""
    import botocore.exceptions

    sagemaker = client(emulator, "sagemaker")
    config = sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    with pytest.raises(botocore.exceptions.ClientError, match="Cannot create already existing endpoint"):
        sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
    assert sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "InService"


def test_alarms_see_sagemakers_metrics_once_a_minute_a_minute_late_and_never_in_sub_minute_periods():
    from tests.emulator_rollout import alarm_state, period_ends, published_before

    alarm = {"Period": 60, "EvaluationPeriods": 2, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
             "Threshold": 1.0, "Statistic": "Sum", "TreatMissingData": "notBreaching"}
    # at 10:03:30 the minutes up to 10:02 are published (one minute of delay): periods 10:01-10:02 and 10:00-10:01
    now = 36_000 + 3 * 60 + 30
    assert published_before(now) == 36_000 + 2 * 60
    assert period_ends(alarm, now) == [36_000 + 2 * 60, 36_000 + 60]
    assert alarm_state(alarm, [[1.0], [0.0, 1.0]]) == "ALARM"
    assert alarm_state(alarm, [[1.0], [0.0]]) == "OK"
    assert alarm_state(alarm, [[1.0], []]) == "OK"  # a missing period is not breaching
    assert alarm_state(alarm, [[], []]) == "INSUFFICIENT_DATA"
    # a 10 s alarm on a metric published once a minute: none of its periods is ever evaluated with data
    assert period_ends({**alarm, "Period": 10}, now) == []
    assert alarm_state({**alarm, "Period": 10}, []) == "INSUFFICIENT_DATA"
