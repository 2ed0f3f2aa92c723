"""Batch Transform jobs on the local SageMaker: CreateTransformJob as SageMaker runs it, no kinder.

moto 5.2.5 records a transform job and calls it Completed at once: it reads no input,
starts no container and writes no output. ``TransformJobs`` replaces its create with what
SageMaker does (docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTransformJob.html,
API_TransformOutput.html, batch-transform.html):

- refused at once (ValidationException): an unknown model, a name already taken,
  ``MaxPayloadInMB`` over 100 or ``MaxConcurrentTransforms * MaxPayloadInMB`` over 100 MB, and an
  input prefix with no objects (SageMaker's "No S3 objects found under S3 URL ..." message);
- otherwise InProgress, then Completed or Failed with a ``FailureReason``: each of
  ``InstanceCount`` instances runs the model's containers as real processes (a serial pipeline's
  each one, with the job's ``Environment`` added to theirs) and takes its share of the objects;
- every object under the prefix is one record (``SplitType`` None, ``BatchStrategy`` SingleRecord),
  sent with the job's ``ContentType`` and ``Accept``, at most ``MaxConcurrentTransforms`` at a time
  per instance; a record over ``MaxPayloadInMB`` is not sent and fails the job;
- the answer goes to ``<S3OutputPath>/<key relative to the prefix>.out``; a container's non-2xx
  answer (or none) writes nothing for that record and fails the job once the other records
  are done ("uploads only the output for successfully processed objects. If any object fails ...
  marks the job as failed"), as does an output that cannot be written;
- what happened to each record goes to the job's log, ``log_file(job)``: the stand-in for the
  CloudWatch log group /aws/sagemaker/TransformJobs (the FailureReason only points there).

Unsupported here, refused rather than pretended: ``ManifestFile`` inputs, ``SplitType`` other than None,
``MultiRecord``, compressed input.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from moto.core.utils import utcnow
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeTransformJob, SageMakerModelBackend

from local_server import TritonServer
from local_server.serial_pipeline import ContainerFailed, PipelineContainer, SerialPipeline

PAYLOAD_LIMIT_MB = 100
MB = 2**20
DEFAULT_PAYLOAD_MB = 6  # MaxPayloadInMB's default
INVOCATION_TIMEOUT_S = 600  # ModelClientConfig.InvocationsTimeoutInSeconds' default
NO_OBJECTS = ('No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure that the bucket '
              'exists in the selected region ({region}), that objects exist under that S3 prefix, and that the role '
              '"{role}" has "s3:ListBucket" permissions on bucket "{bucket}".')
# SageMaker's FailureReason for a record a container refused: the category, and where the details are
# (the per-record lines, "<bucket>/<key>: ClientError: 400", are in the job's CloudWatch log).
SEE_LOGS = "ClientError: See job logs for more information"
UPLOAD_FAILED = "ClientError: Failed to upload the output to "  # the emulator's wording: AWS's is not documented


@dataclass
class Record:
    """One input object and what became of it."""

    key: str
    failure: str = ""  # the job's FailureReason this record causes; empty: its answer was written
    log_lines: list[str] = field(default_factory=list)


class TransformJobs:
    """Installs transform jobs on a ``LocalSageMaker``; ``stop()`` ends the containers of running ones."""

    def __init__(self, emulator):
        self.emulator = emulator
        self.running: list[SerialPipeline] = []
        self.lock = threading.Lock()

    def install(self) -> TransformJobs:
        jobs = self
        moto_create = SageMakerModelBackend.create_transform_job

        def create_transform_job(backend, **arguments) -> FakeTransformJob:
            jobs.refuse_invalid(backend, arguments)
            job = moto_create(backend, **arguments)
            job.transform_job_status, job.failure_reason, job.transform_end_time = "InProgress", None, None
            threading.Thread(target=jobs.run, args=(job,), daemon=True).start()
            return job

        self.emulator._patch(SageMakerModelBackend, "create_transform_job", create_transform_job)
        return self

    def stop(self) -> None:
        with self.lock:
            pipelines, self.running = self.running, []
        for pipeline in pipelines:
            pipeline.stop()

    def log_file(self, job_name: str) -> Path:
        """The job's log: the stand-in for its CloudWatch log stream ``<job>/<instance>/data-log``."""
        return self.emulator.workdir / "cloudwatch" / "aws" / "sagemaker" / "TransformJobs" / job_name / "data-log"

    # -- CreateTransformJob's own checks ---------------------------------------------------
    def refuse_invalid(self, backend, arguments: dict) -> None:
        name = arguments["transform_job_name"]
        if name in backend.transform_jobs:
            raise ValidationError(f"Job name must be unique within an AWS account and region, and a job with this "
                                  f"name already exists ({backend.transform_jobs[name].arn})")
        model = backend.describe_model(arguments["model_name"])  # SageMaker's "Could not find model" when unknown
        payload = arguments.get("max_payload_in_mb") or DEFAULT_PAYLOAD_MB
        concurrent = arguments.get("max_concurrent_transforms") or 1
        if payload > PAYLOAD_LIMIT_MB or payload * concurrent > PAYLOAD_LIMIT_MB:
            raise ValidationError(f"MaxPayloadInMB ({payload}) and MaxConcurrentTransforms * MaxPayloadInMB "
                                  f"({payload * concurrent}) cannot be greater than {PAYLOAD_LIMIT_MB} MB.")
        source = arguments["transform_input"]["DataSource"]["S3DataSource"]
        if source.get("S3DataType") != "S3Prefix" or (arguments["transform_input"].get("SplitType") or "None") != \
                "None" or (arguments.get("batch_strategy") or "SingleRecord") != "SingleRecord":
            raise ValidationError("the emulator plays S3Prefix inputs, SplitType None and BatchStrategy SingleRecord "
                                  "only")
        if not self.input_keys(source["S3Uri"]):
            bucket, _ = split_s3(source["S3Uri"])
            raise ValidationError(NO_OBJECTS.format(uri=source["S3Uri"], region=backend.region_name,
                                                    role=model.execution_role_arn, bucket=bucket))

    def input_keys(self, uri: str) -> list[str]:
        bucket, prefix = split_s3(uri)
        s3 = self.emulator.s3()
        try:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [item["Key"] for page in pages for item in page.get("Contents", [])
                    if not item["Key"].endswith("/")]
        except s3.exceptions.NoSuchBucket:
            return []

    # -- the job, as SageMaker runs it -----------------------------------------------------
    def run(self, job: FakeTransformJob) -> None:
        """InProgress until every record is done; any failure, the emulator's own included, ends in Failed."""
        try:
            reason = self.transform(job)
        except Exception as error:  # nothing may leave the job InProgress forever
            reason = f"InternalServerError: {type(error).__name__}: {error}"
            self.write_log(job.transform_job_name, [f"emulator: {reason}"])
        now = utcnow()
        job.failure_reason = reason or None
        job.transform_end_time = job.last_modified_time = now
        job.transform_job_status = "Failed" if reason else "Completed"

    def transform(self, job: FakeTransformJob) -> str:
        """Start the instances, send every record, write the answers; the FailureReason, or empty."""
        name = job.transform_job_name
        records = [Record(key) for key in self.input_keys(job.transform_input["DataSource"]["S3DataSource"]["S3Uri"])]
        count = int(job.transform_resources.get("InstanceCount", 1))
        try:
            instances = [self.start_instance(job, position) for position in range(count)]
        except Exception as error:  # a container that does not start: the job fails before any record
            self.write_log(name, [f"container start failed: {error}"])
            return "ClientError: a container of the model did not pass the ping health check. " \
                   "See job logs for more information"
        try:
            with ThreadPoolExecutor(count) as pool:  # instance i takes every count-th object
                list(pool.map(lambda position: self.run_instance(job, instances[position], records[position::count]),
                              range(count)))
        finally:
            for pipeline in instances:
                self.retire(pipeline)
        self.write_log(name, [line for record in records for line in record.log_lines])
        return job_failure(records)

    def start_instance(self, job: FakeTransformJob, position: int) -> SerialPipeline:
        """One instance: the model's containers, each a process, with the job's Environment added to theirs."""
        model = self.emulator._client("sagemaker").describe_model(ModelName=job.model_name)
        environment = job.environment or {}
        log = self.log_file(job.transform_job_name).with_name(f"instance-{position}")
        log.parent.mkdir(parents=True, exist_ok=True)
        config = f"{job.transform_job_name}-{position}"
        if model.get("Containers"):
            containers = [{**c, "Environment": {**c.get("Environment", {}), **environment}}
                          for c in model["Containers"]]
            pipeline = self.emulator._start_pipeline(config, {**model, "Containers": containers}, log)
        else:
            container = model["PrimaryContainer"]
            process = self.emulator._start_one({**container, "Environment": {**container.get("Environment", {}),
                                                                              **environment}}, config, log)
            url = process.sagemaker_url if isinstance(process, TritonServer) else process.url
            pipeline = SerialPipeline([PipelineContainer("primary", url, process)])
        with self.lock:
            self.running.append(pipeline)
        return pipeline

    def retire(self, pipeline: SerialPipeline) -> None:
        with self.lock:
            if pipeline in self.running:
                self.running.remove(pipeline)
        pipeline.stop()

    def run_instance(self, job: FakeTransformJob, pipeline: SerialPipeline, records: list[Record]) -> None:
        with ThreadPoolExecutor(job.max_concurrent_transforms or 1) as pool:
            list(pool.map(lambda record: self.transform_record(job, pipeline, record), records))

    def transform_record(self, job: FakeTransformJob, pipeline: SerialPipeline, record: Record) -> None:
        source_uri = job.transform_input["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, prefix = split_s3(source_uri)
        s3 = self.emulator.s3()
        where = f"{bucket}/{record.key}"
        limit = (job.max_payload_in_mb or DEFAULT_PAYLOAD_MB) * MB
        size = s3.head_object(Bucket=bucket, Key=record.key)["ContentLength"]
        if size > limit:
            record.failure = SEE_LOGS
            record.log_lines.append(f"{where}: ClientError: the record is {size} bytes, over MaxPayloadInMB "
                                    f"({limit // MB} MB)")
            return
        body = s3.get_object(Bucket=bucket, Key=record.key)["Body"].read()
        timeout_s = (job.model_client_config or {}).get("InvocationsTimeoutInSeconds", INVOCATION_TIMEOUT_S)
        try:
            answer = pipeline.invoke(body, job.transform_input.get("ContentType", ""),
                                     job.transform_output.get("Accept", ""), timeout_s)
        except ContainerFailed as failed:
            record.failure = SEE_LOGS
            status = "timed out" if failed.timed_out else str(failed.status)
            record.log_lines.append(f"{where}: ClientError: {status} from {failed.container}: "
                                    f"{str(failed).splitlines()[0] if str(failed) else ''}")
            return
        self.write_answer(job, record, record.key[len(prefix):], answer, where)

    def write_answer(self, job: FakeTransformJob, record: Record, relative_key: str, answer, where: str) -> None:
        """``<S3OutputPath>/<relative key>.out``; an output that cannot be written fails the record and the job."""
        bucket, prefix = split_s3(job.transform_output["S3OutputPath"])
        key = f"{prefix.rstrip('/')}/{relative_key}.out".lstrip("/")
        s3 = self.emulator.s3()
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=answer.body, ContentType=answer.content_type)
        except s3.exceptions.ClientError as error:
            details = error.response.get("Error", {})
            record.failure = (f"{UPLOAD_FAILED}s3://{bucket}/{key}: {details.get('Code')}: "
                              f"{details.get('Message')}")
            record.log_lines.append(f"{where}: {record.failure}")

    def write_log(self, job_name: str, lines: list[str]) -> None:
        log = self.log_file(job_name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as output:
            output.writelines(f"{line}\n" for line in lines)


def job_failure(records: list[Record]) -> str:
    """The job's FailureReason: an output it could not write first (it concerns every record), else a refused
    record's; empty when every record's answer was written."""
    failures = [record.failure for record in records if record.failure]
    return next((failure for failure in failures if failure.startswith(UPLOAD_FAILED)), failures[0] if failures else "")


def split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key
