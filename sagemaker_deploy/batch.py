"""``batch``: a SageMaker Batch Transform job over an S3 folder of images, one Lookout answer per image, a summary.

    python -m sagemaker_deploy --region R batch --input s3://B/line-3/2026-12-02/ --output s3://B/results/2026-12-02/ \\
        --repository build/gpu --default-model pcb_inspection --bucket B --role ARN [--instance-count 2]

The job runs the same serial-pipeline model as ``deploy --lookout-api`` (``serial_pipeline.py``):
registered from ``--repository`` for this job (and deleted after it, with its archives), or an
existing one named by ``--model``. Every object under the input prefix is one record
(``SplitType`` None, ``BatchStrategy`` SingleRecord); SageMaker writes each answer to
``<output>/<key relative to the input prefix>.out`` (``AssembleWith`` None). ``LOOKOUT_BATCH=1``
in the job's ``Environment`` makes the adapters answer a record they refuse with 200 and an
``{"Error": ...}`` body: on SageMaker any container error fails the whole job. The command
then reads every result back and writes ``<output>/summary.json``: the counts, the anomalies by
class, and each failed record with its one-line reason.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sagemaker_deploy.aws import Aws, AwsError, ownership_tags, s3_tagging, split_s3
from sagemaker_deploy.deploy import (DEFAULT_INSTANCE, DEFAULT_TRITON_VERSION, Created, DeployRequest, check_release,
                                     packed_release, release_name, remove)
from sagemaker_deploy.serial_pipeline import create_pipeline_model

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # what Lookout took: a prefix without one is refused before the job
RECORD_CONTENT_TYPE = "application/x-image"  # a job has one ContentType: JPEG and PNG records alike
BATCH_ENVIRONMENT = {"LOOKOUT_BATCH": "1"}  # SageMaker passes the job's Environment to the containers
OUTPUT_SUFFIX = ".out"
SUMMARY = "summary.json"
# CreateTransformJob: MaxPayloadInMB "cannot be greater than 100 MB", nor MaxConcurrentTransforms * MaxPayloadInMB.
PAYLOAD_LIMIT_MB = 100
MB = 2**20  # SageMaker's MB, as in InvokeEndpoint's 6 MB = 6,291,456 bytes
REQUEST_HEADER_ROOM = 64 * 2**10  # the request adapter's binary+json header around the image bytes
TERMINAL = ("Completed", "Failed", "Stopped")


class BatchFailed(RuntimeError):
    """The batch could not run, or its job did not complete; the message says why in one line."""


class JobStillRunning(BatchFailed):
    """The wait ended before the job did: what it runs on must stay."""


@dataclass
class BatchRequest:
    input: str  # s3://bucket/prefix/ of the images
    output: str  # s3://bucket/prefix/ for the answers and the summary
    region: str
    repository: Path | None = None  # register the pipeline model from this build ...
    model: str = ""  # ... or use this existing serial-pipeline model (deploy --lookout-api's)
    default_model: str = ""  # the product's pipeline, <product>_inspection
    bucket: str = ""  # where a registered model's archives go
    role: str = ""
    prefix: str = "visual-inspection-triton"
    name: str = "lookout-batch"  # the job's name stem and its resources' ownership tag
    instance_type: str = DEFAULT_INSTANCE
    instance_count: int = 1
    max_concurrent_transforms: int = 1  # SageMaker's default
    max_payload_mb: int = 6  # SageMaker's default; Lookout took images up to 8 MB
    triton_version: str = DEFAULT_TRITON_VERSION
    allow_cpu_target: bool = False
    workdir: Path = Path("build/sagemaker")
    poll_s: float = 30.0
    wait_timeout_s: float = 6 * 3600.0

    def __post_init__(self) -> None:
        self.input, self.output = folder(self.input), folder(self.output)


def folder(url: str) -> str:
    """An s3:// prefix as a folder (trailing slash): s3://b/images must not also match s3://b/images-old/."""
    return url if url.endswith("/") else f"{url}/"


def refusal(arguments: dict) -> str:
    """Why the batch arguments cannot work, found before any AWS call; empty when they can."""
    payload, concurrent = arguments["max_payload_mb"], arguments["max_concurrent_transforms"]
    source, output = folder(arguments["input"]), folder(arguments["output"])
    checks = [
        (not source.startswith("s3://") or not output.startswith("s3://"), "--input and --output must be s3:// URLs"),
        (output.startswith(source), f"--output {output} is inside --input {source}: a rerun would read the results "
                                    "as images"),
        (not 1 <= payload <= PAYLOAD_LIMIT_MB, f"--max-payload-mb must be 1-{PAYLOAD_LIMIT_MB} (CreateTransformJob's "
                                               "MaxPayloadInMB)"),
        (concurrent < 1 or concurrent * payload > PAYLOAD_LIMIT_MB,
         f"--max-concurrent-transforms x --max-payload-mb = {concurrent * payload} MB: SageMaker allows at most "
         f"{PAYLOAD_LIMIT_MB} MB (MaxConcurrentTransforms * MaxPayloadInMB)"),
        (arguments["instance_count"] < 1, "--instance-count must be at least 1"),
        (arguments.get("repository") and not (arguments.get("default_model") and arguments.get("bucket")
                                              and arguments.get("role")),
         "--repository needs --default-model (a product's <product>_inspection), --bucket and --role"),
    ]
    return next((reason for failed, reason in checks if failed), "")


def input_records(aws: Aws, source: str) -> list[str]:
    """The keys of every object under the input prefix (S3Prefix: each one a record), folder markers left out."""
    bucket, prefix = split_s3(source)
    items = aws.pages("s3", "list_objects_v2", "Contents", Bucket=bucket, Prefix=prefix)
    return [item["Key"] for item in items if not item["Key"].endswith("/")]


def refuse_without_images(source: str, keys: list[str]) -> None:
    """SageMaker refuses CreateTransformJob for an empty prefix and would run one of only non-images to fail every
    record: either way nothing is registered or started."""
    if not any(key.lower().endswith(IMAGE_SUFFIXES) for key in keys):
        found = f"{len(keys)} objects, none of them" if keys else "no objects, so no"
        raise BatchFailed(f"{source} holds {found} .jpg, .jpeg or .png image: nothing to inspect")


def output_key(request: BatchRequest, key: str) -> str:
    """Where SageMaker writes a record's answer: the key relative to the input prefix, + .out, under the output."""
    _, source_prefix = split_s3(request.input)
    _, output_prefix = split_s3(request.output)
    return f"{output_prefix}{key[len(source_prefix):]}{OUTPUT_SUFFIX}"


def with_batch_body_limit(environment: dict[str, str], max_payload_mb: int) -> dict[str, str]:
    """A record may be up to MaxPayloadInMB, not the real-time 6 MB a Triton image is told (deploy.body_limit_args)."""
    words = environment.get("SAGEMAKER_TRITON_ADDITIONAL_ARGS", "").split()
    limit = f"--http-max-input-size={max_payload_mb * MB + REQUEST_HEADER_ROOM}"
    words = [limit if word.startswith("--http-max-input-size=") else word for word in words]
    return {**environment, "SAGEMAKER_TRITON_ADDITIONAL_ARGS": " ".join(words)} if words else dict(environment)


def deploy_request(request: BatchRequest) -> DeployRequest:
    return DeployRequest(request.repository, request.name, request.bucket, request.role, request.region,
                         request.prefix, request.default_model, request.instance_type, request.triton_version,
                         workdir=request.workdir, allow_cpu_target=request.allow_cpu_target, lookout_api=True)


def register_model(aws: Aws, created: Created, request: BatchRequest) -> str:
    """The --lookout-api serial-pipeline model of the repository, tagged as this batch's; its name."""
    pipeline = deploy_request(request)
    release = packed_release(aws, created, pipeline)
    release.environment = with_batch_body_limit(release.environment, request.max_payload_mb)
    create_pipeline_model(aws, created, pipeline, release)
    return release.name


def start_job(aws: Aws, request: BatchRequest, job: str, model: str) -> None:
    aws.call("sagemaker", "create_transform_job", TransformJobName=job, ModelName=model,
             MaxConcurrentTransforms=request.max_concurrent_transforms, MaxPayloadInMB=request.max_payload_mb,
             BatchStrategy="SingleRecord", Environment=BATCH_ENVIRONMENT,
             TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": request.input}},
                             "ContentType": RECORD_CONTENT_TYPE, "SplitType": "None", "CompressionType": "None"},
             TransformOutput={"S3OutputPath": request.output, "Accept": "application/json", "AssembleWith": "None"},
             TransformResources={"InstanceType": request.instance_type, "InstanceCount": request.instance_count},
             Tags=ownership_tags(request.name))


def results_written(aws: Aws, request: BatchRequest) -> int:
    bucket, prefix = split_s3(request.output)
    try:
        items = aws.pages("s3", "list_objects_v2", "Contents", Bucket=bucket, Prefix=prefix)
    except AwsError:  # an output bucket that cannot be read: the job's own status will say what went wrong
        return 0
    return sum(item["Key"].endswith(OUTPUT_SUFFIX) for item in items)


def wait_for_job(aws: Aws, request: BatchRequest, job: str, records: int) -> dict:
    """DescribeTransformJob until the job ends, a progress line whenever its status or written results change."""
    started, last_line = time.monotonic(), ""
    while True:
        description = aws.call("sagemaker", "describe_transform_job", TransformJobName=job)
        status = description.get("TransformJobStatus", "?")
        line = f"transform job {job}: {status}, {results_written(aws, request)}/{records} results written"
        if line != last_line:
            aws.say(f"{line} ({time.monotonic() - started:.0f} s)")
            last_line = line
        if status in TERMINAL:
            return description
        if time.monotonic() - started > request.wait_timeout_s:
            raise JobStillRunning(f"transform job {job} still {status} after {request.wait_timeout_s:.0f} s; it goes "
                                  f"on (aws sagemaker stop-transform-job --transform-job-name {job} ends it)")
        time.sleep(request.poll_s)


def read_result(aws: Aws, request: BatchRequest, key: str, missing_reason: str) -> tuple[dict | None, str]:
    """(the Lookout answer, or None and why the record has none) of one input object."""
    bucket, _ = split_s3(request.output)
    try:
        answer = aws.call("s3", "get_object", Bucket=bucket, Key=output_key(request, key))
        with aws.one_line_errors("s3", "get_object"):
            body = answer["Body"].read()
    except AwsError as error:
        return None, missing_reason if error.code in ("NoSuchKey", "NoSuchBucket") else str(error)
    try:
        result = json.loads(body)
    except ValueError:
        return None, f"the result is not JSON: {body[:60]!r}"
    if "DetectAnomalyResult" in result:
        return result["DetectAnomalyResult"], ""
    error = result.get("Error", {})
    return None, f"{error.get('Code', 'Error')}: {error.get('Message', body[:200])}"


def anomaly_classes(result: dict) -> list[str]:
    """The classes an anomalous image shows (Lookout lists the background first, under that name)."""
    if not result.get("IsAnomalous"):
        return []
    return [anomaly["Name"] for anomaly in result.get("Anomalies", []) if anomaly.get("Name") != "background"]


def summarize(aws: Aws, request: BatchRequest, keys: list[str], job: dict) -> dict:
    """The job's counts: images answered, normal, anomalous, anomalies by class, and each failed record."""
    status = job.get("TransformJobStatus", "?")
    missing = "no result written" + (f": the job {status}: {job.get('FailureReason', '')}" if status != "Completed"
                                     else "")
    bucket, _ = split_s3(request.input)
    results = aws.each("s3", lambda key: read_result(aws, request, key, missing), keys)
    answers = [answer for answer, _ in results if answer is not None]
    by_class = Counter(name for answer in answers for name in anomaly_classes(answer))
    summary = {"job": job.get("TransformJobName", ""), "status": status, "input": request.input,
               "output": request.output, "records": len(keys), "images": len(answers),
               "normal": sum(not answer.get("IsAnomalous") for answer in answers),
               "anomalous": sum(bool(answer.get("IsAnomalous")) for answer in answers),
               "anomalies_by_class": dict(sorted(by_class.items())),
               "failed": [{"record": f"s3://{bucket}/{key}", "reason": reason}
                          for key, (answer, reason) in zip(keys, results) if answer is None]}
    if status != "Completed":
        summary["failure_reason"] = job.get("FailureReason", "")
    return summary


def write_summary(aws: Aws, request: BatchRequest, summary: dict) -> str:
    bucket, prefix = split_s3(request.output)
    aws.call("s3", "put_object", Bucket=bucket, Key=f"{prefix}{SUMMARY}", ContentType="application/json",
             Body=json.dumps(summary, indent=2).encode(), Tagging=s3_tagging(request.name))
    return f"{request.output}{SUMMARY}"


def run_batch(aws: Aws, request: BatchRequest) -> dict:
    """Check, register the model (unless --model), run the job, read the answers back, write and return the summary;
    whatever this run registered is deleted again, whatever happens."""
    if request.repository:  # the local checks first: a repository that cannot serve makes no AWS call
        check_release(deploy_request(request))
    keys = input_records(aws, request.input)
    if not aws.dry_run:
        refuse_without_images(request.input, keys)
    created = Created()
    try:
        model = register_model(aws, created, request) if request.repository else request.model
        job = model if request.repository else release_name(request.name)
        start_job(aws, request, job, model)
        if aws.dry_run:
            return {}
        summary = summarize(aws, request, keys, wait_for_job(aws, request, job, len(keys)))
        try:
            aws.say(f"summary: {write_summary(aws, request, summary)}")
        except AwsError as error:
            if summary["status"] == "Completed":
                raise
            aws.say(f"summary not written: {error}")  # the job failed on the same output
        return summary
    except JobStillRunning:
        aws.say(f"kept for the running job: {', '.join(name for _, name in created.resources)}; remove them "
                f"afterwards with teardown --endpoint {request.name} --delete-artifacts s3://{request.bucket}/")
        created.resources.clear()
        raise
    finally:
        remove(aws, created)
