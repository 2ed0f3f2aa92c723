"""Batch inspection: ``python -m sagemaker_deploy batch`` runs a Batch Transform job over an S3 folder of images.

On the emulated SageMaker (``tests/emulator_transform.py``: the job's containers are real
processes, the serial pipeline of ``deploy --lookout-api``), the images, a corrupt JPEG, a
thumbnail too small for the pipeline and a non-image object live in moto's S3; every answer read back from S3 must equal the pipeline's
own ``LOOKOUT`` output over Triton's HTTP route for the same image (what the real-time
endpoint answers, tests/test_raw_image_requests.py), and the summary must count them and name
each failed record with its reason.
"""
from __future__ import annotations

import contextlib
import io
import json
import time

import pytest
from botocore.exceptions import ClientError
from PIL import Image

from sagemaker_deploy.__main__ import main as deploy_main
from sagemaker_deploy.aws import Aws
from sagemaker_deploy.batch import BatchRequest, register_model, summarize
from sagemaker_deploy.deploy import Created, remove
from tests.aws_emulator import INSTANCE, ROLE, apply_environment
from tests.emulator_transform import SEE_LOGS
from tests.test_raw_image_requests import images, pipeline_name, triton_lookout  # noqa: F401 (fixtures)

BUCKET = "factory-photos"
SOURCE = f"s3://{BUCKET}/images/line-3"  # no trailing slash: the command takes it as the folder
RESULTS = f"s3://{BUCKET}/results/line-3/"
GOOD = {"board.jpg": "image/jpeg", "station-2/board.png": "image/png"}  # key -> the images fixture's entry
PHOTO = "cat.jpg"  # a real photograph, not a board
CORRUPT, NOT_AN_IMAGE, TOO_SMALL = "corrupt.jpg", "notes.txt", "thumbnail.png"


def run_command(local_sagemaker, arguments: list[str]) -> tuple[int, str, str]:
    """``python -m sagemaker_deploy --region us-east-1 <arguments>`` against the local SageMaker: (rc, out, err)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        apply_environment(patch, local_sagemaker)
        code = deploy_main(["--region", "us-east-1", *arguments])
    return code, out.getvalue(), err.getvalue()


def printed_summary(out: str) -> dict:
    """The summary the command prints last (indented JSON), after its AWS calls."""
    return json.loads(out[out.rindex("\n{\n") + 1:])


def batch_arguments(cpu_repository, pipeline: str, source: str, output: str) -> list[str]:
    return ["batch", "--input", source, "--output", output, "--repository", str(cpu_repository), "--default-model",
            pipeline, "--bucket", BUCKET, "--role", ROLE, "--instance-type", INSTANCE, "--allow-cpu-target",
            "--max-concurrent-transforms", "2", "--poll-s", "0.5", "--wait-timeout-s", "300"]


def jpeg_cut_in_half(jpeg: bytes) -> bytes:
    """A JPEG with a valid start and half its data gone: what a camera's failed upload leaves."""
    return jpeg[:len(jpeg) // 2]


def png_of_side(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), "gray").save(buffer, format="PNG")
    return buffer.getvalue()


def read(local_sagemaker, url: str) -> bytes:
    bucket, key = url.removeprefix("s3://").split("/", 1)
    return local_sagemaker.s3().get_object(Bucket=bucket, Key=key)["Body"].read()


def put(local_sagemaker, url: str, body: bytes) -> None:
    bucket, key = url.removeprefix("s3://").split("/", 1)
    local_sagemaker.s3().put_object(Bucket=bucket, Key=key, Body=body)


def transform_jobs(local_sagemaker) -> list[str]:
    sagemaker = local_sagemaker._client("sagemaker")
    return [job["TransformJobName"] for job in sagemaker.list_transform_jobs()["TransformJobSummaries"]]


@pytest.fixture(scope="module")
def inputs(local_sagemaker, images, photos) -> dict[str, bytes]:  # noqa: F811 (the imported fixture)
    """The folder of the day: two boards (JPEG, PNG), a photo, a corrupt JPEG, a thumbnail under the pipeline's
    32 pixels per side, and a note."""
    objects = {**{key: images[kind] for key, kind in GOOD.items()}, PHOTO: photos["chelsea"],
               CORRUPT: jpeg_cut_in_half(images["image/jpeg"]), TOO_SMALL: png_of_side(16),
               NOT_AN_IMAGE: b"line 3 ran slow after lunch\n"}
    for key, body in objects.items():
        put(local_sagemaker, f"{SOURCE}/{key}", body)
    return objects


@pytest.fixture(scope="module")
def batch(local_sagemaker, cpu_repository, pipeline_name, inputs):  # noqa: F811
    """The batch command over the folder: (rc, printed, stderr, the job's name)."""
    before = set(transform_jobs(local_sagemaker))
    code, out, err = run_command(local_sagemaker, batch_arguments(cpu_repository, pipeline_name, SOURCE, RESULTS))
    [job] = set(transform_jobs(local_sagemaker)) - before
    return code, out, err, job


@pytest.fixture(scope="module")
def pipeline_model(local_sagemaker, cpu_repository, pipeline_name, tmp_path_factory):  # noqa: F811
    """A serial-pipeline model as the command registers it, kept for the jobs these tests start themselves."""
    with pytest.MonkeyPatch.context() as patch:
        apply_environment(patch, local_sagemaker)
        aws = Aws("us-east-1", say=lambda line: None)
        request = BatchRequest(SOURCE, RESULTS, "us-east-1", cpu_repository, default_model=pipeline_name,
                               bucket=BUCKET, role=ROLE, name="batch-tests", instance_type=INSTANCE,
                               allow_cpu_target=True, workdir=tmp_path_factory.mktemp("batch-model"))
        created = Created()
        yield register_model(aws, created, request)
        remove(aws, created)


def expected_answers(server, pipeline: str, inputs: dict[str, bytes]) -> dict[str, dict]:
    """The real-time Lookout answer (Triton's own route) of every good image, by key."""
    return {key: triton_lookout(server, pipeline, inputs[key]) for key in [*GOOD, PHOTO]}


def test_the_batch_completes_and_every_image_has_its_real_time_answer_at_its_key_dot_out(
        batch, local_sagemaker, server, pipeline_name, inputs):  # noqa: F811
    code, _, err, _ = batch
    assert code == 0, err
    for key, answer in expected_answers(server, pipeline_name, inputs).items():
        assert json.loads(read(local_sagemaker, f"{RESULTS}{key}.out")) == answer, key


def test_a_corrupt_image_a_thumbnail_and_a_non_image_fail_only_their_records_with_a_one_line_error_body(
        batch, local_sagemaker):
    job = local_sagemaker._client("sagemaker").describe_transform_job(TransformJobName=batch[3])
    assert job["TransformJobStatus"] == "Completed" and "FailureReason" not in job
    for key, reason in ((CORRUPT, "the JPEG image cannot be decoded"),
                        (TOO_SMALL, "the PNG image is 16x16 pixels, under the pipeline's 32 per side"),
                        (NOT_AN_IMAGE, "the object is not a JPEG or PNG image")):
        error = json.loads(read(local_sagemaker, f"{RESULTS}{key}.out"))["Error"]
        assert error["Code"] == "ValidationException" and error["Message"].startswith(reason)
        assert "\n" not in error["Message"]


def test_the_summary_counts_the_answers_and_names_each_failed_record(batch, local_sagemaker, server, pipeline_name,
                                                                     inputs):  # noqa: F811
    _, out, _, job = batch
    summary = json.loads(read(local_sagemaker, f"{RESULTS}summary.json"))
    assert printed_summary(out) == summary
    answers = [answer["DetectAnomalyResult"] for answer in expected_answers(server, pipeline_name, inputs).values()]
    anomalous = [answer for answer in answers if answer["IsAnomalous"]]
    classes = sorted(anomaly["Name"] for answer in anomalous for anomaly in answer.get("Anomalies", [])
                     if anomaly["Name"] != "background")
    assert (summary["job"], summary["status"], summary["records"], summary["images"]) == (job, "Completed", 6, 3)
    assert (summary["normal"], summary["anomalous"]) == (3 - len(anomalous), len(anomalous))
    assert sorted(name for name, count in summary["anomalies_by_class"].items() for _ in range(count)) == classes
    failed = {entry["record"]: entry["reason"] for entry in summary["failed"]}
    assert set(failed) == {f"s3://{BUCKET}/images/line-3/{key}" for key in (CORRUPT, TOO_SMALL, NOT_AN_IMAGE)}
    assert failed[f"s3://{BUCKET}/images/line-3/{CORRUPT}"].startswith(
        "ValidationException: the JPEG image cannot be decoded")


def test_the_job_is_the_documented_single_record_transform_with_lookout_batch_in_its_environment(batch,
                                                                                                 local_sagemaker):
    job = local_sagemaker._client("sagemaker").describe_transform_job(TransformJobName=batch[3])
    assert job["BatchStrategy"] == "SingleRecord" and job["Environment"] == {"LOOKOUT_BATCH": "1"}
    assert job["TransformInput"]["SplitType"] == "None" and job["TransformOutput"]["AssembleWith"] == "None"
    assert job["TransformInput"]["DataSource"]["S3DataSource"] == {"S3DataType": "S3Prefix",
                                                                   "S3Uri": f"{SOURCE}/"}
    assert (job["MaxConcurrentTransforms"], job["MaxPayloadInMB"]) == (2, 6)


def test_the_command_deletes_the_model_and_archives_it_registered_and_nothing_else(batch, local_sagemaker, inputs):
    sagemaker, job = local_sagemaker._client("sagemaker"), batch[3]
    assert job not in [model["ModelName"] for model in sagemaker.list_models()["Models"]]
    keys = {item["Key"] for item in local_sagemaker.s3().list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert not [key for key in keys if key.startswith("visual-inspection-triton/")]
    assert {f"images/line-3/{key}" for key in inputs} <= keys  # the images stay
    tags = sagemaker.list_tags(ResourceArn=sagemaker.describe_transform_job(TransformJobName=job)["TransformJobArn"])
    assert {"Key": "visual-inspection-triton:endpoint", "Value": "lookout-batch"} in tags["Tags"]


@pytest.mark.parametrize("objects, words", [({}, "holds no objects"),
                                            ({"readme.txt": b"photos go here"}, "1 objects, none of them")])
def test_a_prefix_without_images_is_refused_before_anything_is_registered_or_started(
        local_sagemaker, cpu_repository, pipeline_name, objects, words):  # noqa: F811
    source = f"s3://{BUCKET}/empty-{len(objects)}/"
    for key, body in objects.items():
        put(local_sagemaker, f"{source}{key}", body)
    sagemaker = local_sagemaker._client("sagemaker")
    jobs, models = transform_jobs(local_sagemaker), sagemaker.list_models()["Models"]
    code, out, err = run_command(local_sagemaker, batch_arguments(cpu_repository, pipeline_name, source,
                                                                  f"s3://{BUCKET}/empty-results/"))
    assert code == 1 and words in err and len(err.strip().splitlines()) == 1
    assert transform_jobs(local_sagemaker) == jobs and sagemaker.list_models()["Models"] == models
    assert "s3.upload_file" not in out


def test_sagemaker_itself_refuses_a_transform_job_over_an_empty_prefix(local_sagemaker, pipeline_model):
    sagemaker = local_sagemaker._client("sagemaker")
    with pytest.raises(ClientError) as raised:
        sagemaker.create_transform_job(
            TransformJobName="over-nothing", ModelName=pipeline_model,
            TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                            "S3Uri": f"s3://{BUCKET}/nothing-here/"}}},
            TransformOutput={"S3OutputPath": f"s3://{BUCKET}/nothing-out/"},
            TransformResources={"InstanceType": INSTANCE, "InstanceCount": 1})
    error = raised.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"].startswith(f'No S3 objects found under S3 URL "s3://{BUCKET}/nothing-here/"')
    assert "over-nothing" not in transform_jobs(local_sagemaker)


def test_an_output_bucket_that_does_not_exist_fails_the_job_and_the_command_says_why(local_sagemaker, pipeline_model,
                                                                                    images):  # noqa: F811
    source = f"s3://{BUCKET}/one-board/"
    put(local_sagemaker, f"{source}board.png", images["image/png"])
    before = set(transform_jobs(local_sagemaker))
    code, _, err = run_command(local_sagemaker, ["batch", "--input", source, "--output", "s3://no-such-bucket/out/",
                                                 "--model", pipeline_model, "--instance-type", INSTANCE,
                                                 "--poll-s", "0.5", "--wait-timeout-s", "300"])
    [job] = set(transform_jobs(local_sagemaker)) - before
    described = local_sagemaker._client("sagemaker").describe_transform_job(TransformJobName=job)
    assert described["TransformJobStatus"] == "Failed"
    assert described["FailureReason"].startswith("ClientError: Failed to upload the output to s3://no-such-bucket/")
    assert "NoSuchBucket" in described["FailureReason"]
    assert code == 1 and f"transform job {job} Failed: ClientError: Failed to upload" in err
    assert pipeline_model in [model["ModelName"] for model in
                              local_sagemaker._client("sagemaker").list_models()["Models"]]  # --model: not ours


def test_a_wait_that_ends_before_the_job_keeps_the_model_it_runs_on_for_teardown(local_sagemaker, cpu_repository,
                                                                                 pipeline_name, images):  # noqa
    source = f"s3://{BUCKET}/still-running/"
    put(local_sagemaker, f"{source}board.png", images["image/png"])
    before = set(transform_jobs(local_sagemaker))
    code, _, err = run_command(local_sagemaker, [*batch_arguments(cpu_repository, pipeline_name, source,
                                                                  f"s3://{BUCKET}/still-running-results/"),
                                                 "--wait-timeout-s", "0"])
    [job] = set(transform_jobs(local_sagemaker)) - before
    sagemaker = local_sagemaker._client("sagemaker")
    assert code == 1 and f"transform job {job} still InProgress" in err
    assert job in [model["ModelName"] for model in sagemaker.list_models()["Models"]]
    deadline = time.monotonic() + 300
    while sagemaker.describe_transform_job(TransformJobName=job)["TransformJobStatus"] == "InProgress" and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    assert sagemaker.describe_transform_job(TransformJobName=job)["TransformJobStatus"] == "Completed"
    code, out, _ = run_command(local_sagemaker, ["teardown", "--endpoint", "lookout-batch", "--delete-artifacts",
                                                 f"s3://{BUCKET}/visual-inspection-triton/"])
    assert code == 0 and f"deleted model {job}" in out
    assert job not in [model["ModelName"] for model in sagemaker.list_models()["Models"]]


def run_job(local_sagemaker, model: str, name: str, objects: dict[str, bytes], **arguments) -> dict:
    """A transform job over ``objects`` started with boto3 itself, followed to its end: what DescribeTransformJob
    said first and last, the keys written, and the job's log."""
    source, output = f"s3://{BUCKET}/{name}/", f"s3://{BUCKET}/{name}-results/"
    for key, body in objects.items():
        put(local_sagemaker, f"{source}{key}", body)
    sagemaker = local_sagemaker._client("sagemaker")
    sagemaker.create_transform_job(
        TransformJobName=name, ModelName=model, BatchStrategy="SingleRecord",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": source}},
                        "ContentType": "image/png", "SplitType": "None"},
        TransformOutput={"S3OutputPath": output, "AssembleWith": "None"}, **arguments)
    first = sagemaker.describe_transform_job(TransformJobName=name)
    deadline, last = time.monotonic() + 300, first
    while last["TransformJobStatus"] == "InProgress" and time.monotonic() < deadline:
        time.sleep(0.5)
        last = sagemaker.describe_transform_job(TransformJobName=name)
    written = {item["Key"] for item in local_sagemaker.s3().list_objects_v2(
        Bucket=BUCKET, Prefix=f"{name}-results/").get("Contents", [])}
    return {"first": first, "last": last, "written": written,
            "log": local_sagemaker.transform_jobs.log_file(name)}


def test_without_lookout_batch_one_refused_record_fails_the_whole_job_as_on_sagemaker(local_sagemaker,
                                                                                     pipeline_model, images):  # noqa
    """The request adapter answers the non-image 400 as on a real-time endpoint: the good image's answer is still
    written, the job ends Failed, and its log names the record. Two instances share the objects."""
    job = run_job(local_sagemaker, pipeline_model, "strict", {"good.png": images["image/png"],
                                                              "not-an-image.png": b"hello"},
                  TransformResources={"InstanceType": INSTANCE, "InstanceCount": 2})
    assert job["first"]["TransformJobStatus"] == "InProgress" and "TransformEndTime" not in job["first"]
    assert job["last"]["TransformJobStatus"] == "Failed" and job["last"]["FailureReason"] == SEE_LOGS
    assert "TransformEndTime" in job["last"] and job["written"] == {"strict-results/good.png.out"}
    assert all(job["log"].with_name(f"instance-{position}-triton").stat().st_size for position in (0, 1))
    assert f"{BUCKET}/strict/not-an-image.png: ClientError: 400 from lookout-request" in job["log"].read_text()


def test_a_record_over_max_payload_is_never_sent_and_fails_the_job(local_sagemaker, pipeline_model,
                                                                   images):  # noqa: F811
    """With LOOKOUT_BATCH no container refuses anything: the oversized object alone fails the job."""
    job = run_job(local_sagemaker, pipeline_model, "oversized", {"good.png": images["image/png"],
                                                                 "huge.png": bytes(2 * 2**20)},
                  MaxPayloadInMB=1, Environment={"LOOKOUT_BATCH": "1"},
                  TransformResources={"InstanceType": INSTANCE, "InstanceCount": 1})
    assert job["last"]["TransformJobStatus"] == "Failed" and job["last"]["FailureReason"] == SEE_LOGS
    assert job["written"] == {"oversized-results/good.png.out"}
    assert (f"{BUCKET}/oversized/huge.png: ClientError: the record is {2 * 2**20} bytes, over MaxPayloadInMB (1 MB)"
            in job["log"].read_text())


def test_the_summary_counts_anomalous_images_by_class_leaving_the_background_out(local_sagemaker):
    """Answers as SageMaker leaves them in S3 (the untrained cpu models call every test image normal)."""
    def lookout(anomalous: bool, *classes: str) -> bytes:
        anomalies = [{"Name": name, "PixelAnomaly": {"TotalPercentageArea": 0.1, "Color": "#ff0000"}}
                     for name in ("background", *classes)]
        return json.dumps({"DetectAnomalyResult": {"IsAnomalous": anomalous, "Confidence": 0.9,
                                                   "Anomalies": anomalies}}).encode()

    answers = {"a.png": lookout(True, "scratch", "missing_part"), "b.png": lookout(True, "scratch"),
               "c.png": lookout(False), "d.png": b'{"Error": {"Code": "ValidationException", "Message": "too big"}}'}
    request = BatchRequest(f"s3://{BUCKET}/counted/", f"s3://{BUCKET}/counted-results/", "us-east-1")
    for key, body in answers.items():
        put(local_sagemaker, f"{request.output}{key}.out", body)
    with pytest.MonkeyPatch.context() as patch:
        apply_environment(patch, local_sagemaker)
        summary = summarize(Aws("us-east-1", say=lambda line: None), request, [f"counted/{key}" for key in
                                                                               [*answers, "e.png"]],
                            {"TransformJobName": "counted", "TransformJobStatus": "Failed",
                             "FailureReason": SEE_LOGS})
    assert (summary["records"], summary["images"], summary["normal"], summary["anomalous"]) == (5, 3, 1, 2)
    assert summary["anomalies_by_class"] == {"missing_part": 1, "scratch": 2}
    assert summary["failed"] == [
        {"record": f"s3://{BUCKET}/counted/d.png", "reason": "ValidationException: too big"},
        {"record": f"s3://{BUCKET}/counted/e.png", "reason": f"no result written: the job Failed: {SEE_LOGS}"}]
    assert summary["failure_reason"] == SEE_LOGS
