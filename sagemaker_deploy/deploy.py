"""Real-time and async SageMaker endpoints for the repository, their roll-out and their removal.

Every resource a deploy or update creates (model, endpoint config, endpoint, S3 archive)
carries the ``project`` tag and a tag naming its endpoint, so ``teardown`` deletes by
exact tags, never by a name prefix, and reads every page of every listing. A deploy that
fails removes what it created; an update that fails goes back to the configuration that
was serving.
"""
from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Iterator

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from sagemaker_deploy.aws import (ENDPOINT_TAG_KEY, PROJECT_TAG, SCALING_TAG_KEY, Aws, AwsError, ownership_tags,
                                  s3_tagging)
from sagemaker_deploy.compatibility import sagemaker_port_takes_http_limits
from sagemaker_deploy.package import additional_args, check_repository, make_archive
from sagemaker_deploy.serial_pipeline import check_lookout_pipeline, create_pipeline_model

DEFAULT_INSTANCE = "ml.g5.xlarge"
DEFAULT_TRITON_VERSION = "26.05"  # why: sagemaker_deploy/compatibility.py and the README
WAIT_POLL_S = 30.0
# InvokeEndpoint's Body: "Maximum length of 6291456" bytes (runtime API reference); the container is told the
# same limit, so a body that bypasses SageMaker's front still cannot make it allocate more.
REALTIME_BODY_LIMIT = 6 * 2**20
WAIT_TIMEOUT_S = 3600.0


class DeployFailed(RuntimeError):
    """The endpoint did not reach InService; the message holds SageMaker's reason and where the logs are."""


@dataclass
class Release:
    """One model version: its archive in S3 and the container that serves it."""

    name: str  # used for the SageMaker model and endpoint config
    model_data_url: str
    image_uri: str
    environment: dict[str, str]
    endpoint: str = ""  # the endpoint it is made for: its resources' ownership tag
    mode: str = "SingleModel"  # or "MultiModel": model_data_url is then an S3 prefix of archives


@dataclass
class Created:
    """What this run created, newest last, so that a failure removes exactly that."""

    resources: list[tuple[str, str]] = field(default_factory=list)  # (kind, name or s3 url)

    def add(self, kind: str, name: str) -> None:
        self.resources.append((kind, name))


def image_uri(region: str, triton_version: str, instance_type: str) -> str:
    """SageMaker's Triton image for the region, from the SageMaker SDK's image-URI lookup."""
    from sagemaker.core import image_uris

    return image_uris.retrieve(framework="sagemaker-tritonserver", region=region, version=triton_version,
                               instance_type=instance_type)


def container_environment(default_model: str, bls_models: list[str], thread_count: int | None = None,
                          buffer_manager_thread_count: int | None = None, server_args: tuple[str, ...] = ()) -> dict:
    """The container's variables (docs/sagemaker-serve-variables.md): the default model, the SageMaker
    frontend's threads (--sagemaker-thread-count), the buffer manager's (--buffer-manager-thread-count), and
    SAGEMAKER_TRITON_ADDITIONAL_ARGS for the BLS-only models and ``server_args``. No default model: a
    multi-model container's (its requests name their archive)."""
    environment = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": default_model} if default_model else {}
    if thread_count:
        environment["SAGEMAKER_TRITON_THREAD_COUNT"] = str(thread_count)
    if buffer_manager_thread_count:
        environment["SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT"] = str(buffer_manager_thread_count)
    words = [additional_args(bls_models)] if bls_models else []
    if words or server_args:
        environment["SAGEMAKER_TRITON_ADDITIONAL_ARGS"] = " ".join([*words, *server_args])
    return environment


def body_limit_args(triton_version: str, asynchronous: bool) -> tuple[str, ...]:
    """A real-time endpoint's container refuses bodies over SageMaker's InvokeEndpoint limit itself, where
    the image's tritonserver applies --http-max-input-size to the SageMaker port (compatibility.py)."""
    if asynchronous or not sagemaker_port_takes_http_limits(triton_version):
        return ()
    return (f"--http-max-input-size={REALTIME_BODY_LIMIT}",)


def release_name(prefix: str) -> str:
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


def upload_release(aws: Aws, created: Created, request: DeployRequest, name: str, image: str) -> Release:
    """Check and pack the repository, upload it, and describe the container that will serve it."""
    archive = request.workdir / f"{name}.tar.gz"
    packed, bls = make_archive(request.repository, request.default_model, archive)
    aws.say(f"packed {', '.join(packed)} into {archive} ({archive.stat().st_size / 2**20:.1f} MiB)")
    key = f"{request.prefix.strip('/')}/{name}/model.tar.gz".lstrip("/")
    aws.call("s3", "upload_file", Filename=str(archive), Bucket=request.bucket, Key=key,
             ExtraArgs={"Tagging": s3_tagging(request.endpoint)})
    url = f"s3://{request.bucket}/{key}"
    created.add("s3", url)
    return Release(name, url, image, request_environment(request, request.default_model, bls), request.endpoint)


def request_environment(request: DeployRequest, default_model: str, bls_models: list[str]) -> dict:
    """The container's variables for a deploy request: its thread counts and body limit."""
    return container_environment(default_model, bls_models, request.thread_count, request.buffer_manager_thread_count,
                                 body_limit_args(request.triton_version, bool(request.async_output)))


def create_model(aws: Aws, created: Created, release: Release, role: str) -> None:
    aws.call("sagemaker", "create_model", ModelName=release.name, ExecutionRoleArn=role,
             Tags=ownership_tags(release.endpoint),
             PrimaryContainer={"Image": release.image_uri, "ModelDataUrl": release.model_data_url,
                               "Environment": release.environment, "Mode": release.mode})
    created.add("model", release.name)


def create_endpoint_config(aws: Aws, created: Created, release: Release, instance_type: str,
                           async_config: dict | None = None, instance_count: int = 1) -> None:
    variant = {"VariantName": "AllTraffic", "ModelName": release.name, "InstanceType": instance_type,
               "InitialInstanceCount": instance_count}
    arguments = {"EndpointConfigName": release.name, "ProductionVariants": [variant],
                 "Tags": ownership_tags(release.endpoint)}
    if async_config:
        arguments["AsyncInferenceConfig"] = async_config
    aws.call("sagemaker", "create_endpoint_config", **arguments)
    created.add("endpoint-config", release.name)


def wait_in_service(aws: Aws, endpoint: str, timeout_s: float = WAIT_TIMEOUT_S, poll_s: float = WAIT_POLL_S) -> dict:
    """boto3's endpoint_in_service waiter, one attempt per poll, with a progress display."""
    if aws.dry_run:
        return {}
    waiter = aws.client("sagemaker").get_waiter("endpoint_in_service")
    deadline = time.monotonic() + timeout_s
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(f"waiting for endpoint {endpoint}")
        while True:
            try:
                waiter.wait(EndpointName=endpoint, WaiterConfig={"Delay": poll_s, "MaxAttempts": 1})
                return aws.call("sagemaker", "describe_endpoint", EndpointName=endpoint)
            except Exception as error:  # WaiterError: not yet, or a terminal state
                description = aws.call("sagemaker", "describe_endpoint", EndpointName=endpoint)
                status = description.get("EndpointStatus", "?")
                progress.update(task, description=f"endpoint {endpoint}: {status}")
                if status == "Failed" or "terminal failure" in str(error):
                    raise DeployFailed(failure_message(endpoint, description)) from None
                if time.monotonic() > deadline:
                    raise DeployFailed(f"endpoint {endpoint} still {status} after {timeout_s:.0f} s") from None
                time.sleep(poll_s)


def failure_message(endpoint: str, description: dict) -> str:
    return (f"endpoint {endpoint} failed: {description.get('FailureReason', 'no reason given')}\n"
            f"container logs: CloudWatch log group /aws/sagemaker/Endpoints/{endpoint}")


SAGEMAKER_RESOURCES = {"endpoint": "endpoint", "endpoint-config": "endpoint_config", "model": "model"}


def _pascal(resource: str) -> str:
    """endpoint_config -> EndpointConfig: the stem of SageMaker's field names (EndpointConfigName, ...Arn)."""
    return "".join(word.capitalize() for word in resource.split("_"))


def remove(aws: Aws, created: Created) -> None:
    """Delete what this run created, newest first; keep going past what is already gone."""
    for kind, name in reversed(created.resources):
        try:
            if kind == "s3":
                bucket, key = name.removeprefix("s3://").split("/", 1)
                aws.call("s3", "delete_object", Bucket=bucket, Key=key)
            else:
                resource = SAGEMAKER_RESOURCES[kind]
                aws.call("sagemaker", f"delete_{resource}", **{f"{_pascal(resource)}Name": name})
        except AwsError as error:
            aws.say(f"clean-up: {error}")
    created.resources.clear()


@dataclass
class DeployRequest:
    repository: Path
    endpoint: str
    bucket: str
    role: str
    region: str
    prefix: str = "visual-inspection-triton"
    default_model: str = "ensemble_dali_inception"
    instance_type: str = DEFAULT_INSTANCE
    triton_version: str = DEFAULT_TRITON_VERSION
    thread_count: int | None = None  # SAGEMAKER_TRITON_THREAD_COUNT: the SageMaker frontend's threads
    async_output: str = ""  # s3://... : makes an asynchronous endpoint
    max_concurrent_invocations: int = 4
    workdir: Path = Path("build/sagemaker")
    wait_timeout_s: float = WAIT_TIMEOUT_S
    poll_s: float = WAIT_POLL_S
    allow_cpu_target: bool = False  # deploy a --target cpu build (python runners) on purpose: the local emulator
    instance_count: int = 1  # a canary rollout needs at least 2 (sagemaker_deploy/rollout.py)
    buffer_manager_thread_count: int | None = None  # SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT
    packaged: Release | None = None  # a registered package's image, archive, environment: no packing, no upload
    lookout_api: bool = False  # a serial pipeline that answers raw images like Lookout (serial_pipeline.py)


def async_config(request: DeployRequest) -> dict | None:
    if not request.async_output:
        return None
    output = request.async_output.rstrip("/")
    return {"OutputConfig": {"S3OutputPath": f"{output}/output", "S3FailurePath": f"{output}/failure"},
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": request.max_concurrent_invocations}}


def check_release(request: DeployRequest) -> None:
    """Before any AWS call: the models, their artifacts against the image's runtimes, the target, and for
    --lookout-api the pipeline's image input and Lookout output."""
    check_repository(request.repository, request.default_model, request.triton_version, request.allow_cpu_target)
    if request.lookout_api:
        check_lookout_pipeline(request.repository, request.default_model)


def packed_release(aws: Aws, created: Created, request: DeployRequest) -> Release:
    check_release(request)
    image = image_uri(request.region, request.triton_version, request.instance_type)
    aws.say(f"Triton image for {request.region}: {image}")
    return upload_release(aws, created, request, release_name(request.endpoint), image)


def new_release(aws: Aws, created: Created, request: DeployRequest) -> Release:
    if request.packaged:  # checked and uploaded when it was registered (model_versions/model_registry.py)
        release = Release(release_name(request.endpoint), request.packaged.model_data_url,
                          request.packaged.image_uri, dict(request.packaged.environment), request.endpoint)
    else:
        release = packed_release(aws, created, request)
    if request.lookout_api:
        create_pipeline_model(aws, created, request, release)
    else:
        create_model(aws, created, release, request.role)
    create_endpoint_config(aws, created, release, request.instance_type, async_config(request),
                           request.instance_count)
    return release


@contextmanager
def removed_on_failure(aws: Aws, created: Created) -> Iterator[None]:
    """What the block created is deleted again if it fails (a refused check, an AWS error, a failed endpoint)."""
    try:
        yield
    except (DeployFailed, AwsError, ValueError):
        remove(aws, created)
        raise


def refuse_existing_endpoint(aws: Aws, endpoint: str) -> None:
    """A deploy creates an endpoint: refused, before anything is uploaded, when the name is taken.

    AWS refuses CreateEndpoint for an existing name ("Cannot create already existing
    endpoint"), and the clean-up of the failed deploy would then remove what it uploaded; a
    deploy must never touch what a live endpoint serves.
    """
    existing = [entry for entry in aws.pages("sagemaker", "list_endpoints", "Endpoints", NameContains=endpoint)
                if entry.get("EndpointName") == endpoint]
    if existing:
        raise DeployFailed(f"endpoint {endpoint} already exists ({existing[0].get('EndpointStatus', '?')}): deploy "
                           "creates a new endpoint; release to it with update or rollout, or remove it with teardown")


def start_endpoint(aws: Aws, created: Created, request: DeployRequest, release: Release) -> None:
    aws.call("sagemaker", "create_endpoint", EndpointName=request.endpoint, EndpointConfigName=release.name,
             Tags=ownership_tags(request.endpoint))
    created.add("endpoint", request.endpoint)
    wait_in_service(aws, request.endpoint, request.wait_timeout_s, request.poll_s)


def deploy(aws: Aws, request: DeployRequest) -> Release:
    """Package, upload, create model + endpoint config + endpoint, wait; on failure remove it all."""
    if not request.packaged:  # the local checks first: a repository that cannot serve makes no AWS call
        check_release(request)
    refuse_existing_endpoint(aws, request.endpoint)
    created = Created()
    with removed_on_failure(aws, created):
        release = new_release(aws, created, request)
        start_endpoint(aws, created, request, release)
    aws.say(f"endpoint {request.endpoint} is InService with {release.name}")
    return release


def update(aws: Aws, request: DeployRequest) -> Release:
    """Blue/green: a new model and config, update_endpoint, wait; old config kept until the new one serves."""
    current = aws.call("sagemaker", "describe_endpoint", EndpointName=request.endpoint)
    old_config = current.get("EndpointConfigName", "")
    created = Created()
    try:
        release = new_release(aws, created, request)
        aws.call("sagemaker", "update_endpoint", EndpointName=request.endpoint, EndpointConfigName=release.name)
        wait_in_service(aws, request.endpoint, request.wait_timeout_s, request.poll_s)
        serving = aws.call("sagemaker", "describe_endpoint", EndpointName=request.endpoint)
        if not aws.dry_run and serving.get("EndpointConfigName") != release.name:
            raise DeployFailed(f"update did not take: the endpoint serves {serving.get('EndpointConfigName')}, "
                               f"not {release.name}; {failure_message(request.endpoint, serving)}")
    except (DeployFailed, AwsError, ValueError) as error:
        aws.say(f"update failed, rolling back to {old_config}: {error}")
        roll_back(aws, request, old_config)
        remove(aws, created)
        raise
    retire(aws, old_config)
    aws.say(f"endpoint {request.endpoint} now serves {release.name}; {old_config} retired")
    return release


def roll_back(aws: Aws, request: DeployRequest, old_config: str) -> None:
    serving = aws.call("sagemaker", "describe_endpoint", EndpointName=request.endpoint)
    if aws.dry_run or serving.get("EndpointConfigName") == old_config and serving.get("EndpointStatus") == "InService":
        return  # SageMaker already kept the old configuration serving
    aws.call("sagemaker", "update_endpoint", EndpointName=request.endpoint, EndpointConfigName=old_config)
    wait_in_service(aws, request.endpoint, request.wait_timeout_s, request.poll_s)


def retire(aws: Aws, config_name: str) -> None:
    """Delete a superseded endpoint config and its model (the release's S3 archive stays, for rollbacks)."""
    if not config_name or aws.dry_run:
        return
    config = aws.call("sagemaker", "describe_endpoint_config", EndpointConfigName=config_name)
    aws.call("sagemaker", "delete_endpoint_config", EndpointConfigName=config_name)
    for variant in config.get("ProductionVariants", []):
        aws.call("sagemaker", "delete_model", ModelName=variant["ModelName"])


def owned(tags: list[dict], endpoint: str = "") -> bool:
    """Tagged as the project's and, when ``endpoint`` is given, as that endpoint's (exact value, no prefix)."""
    return PROJECT_TAG in tags and (not endpoint or {"Key": ENDPOINT_TAG_KEY, "Value": endpoint} in tags)


def _resource_tags(aws: Aws, arn: str) -> list[dict]:
    return aws.pages("sagemaker", "list_tags", "Tags", ResourceArn=arn)


def _object_tags(aws: Aws, bucket: str, key: str) -> list[dict]:
    return aws.call("s3", "get_object_tagging", Bucket=bucket, Key=key).get("TagSet", [])


SCALING_TARGET = {"ServiceNamespace": "sagemaker", "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}


def scaling_resource(endpoint: str, variant: str = "AllTraffic") -> dict:
    """The Application Auto Scaling target of an endpoint's variant."""
    return {**SCALING_TARGET, "ResourceId": f"endpoint/{endpoint}/variant/{variant}"}


def record_scaling(aws: Aws, endpoint: str, policies: list[str]) -> None:
    """Tag the endpoint with the scaling policies a command put on its variant: what ``teardown`` may remove."""
    arn = aws.call("sagemaker", "describe_endpoint", EndpointName=endpoint).get("EndpointArn")
    if arn:
        aws.call("sagemaker", "add_tags", ResourceArn=arn, Tags=[{"Key": SCALING_TAG_KEY, "Value": ",".join(policies)}])


def log_group(endpoint: str) -> str:
    """Where SageMaker writes an endpoint's container logs."""
    return f"/aws/sagemaker/Endpoints/{endpoint}"


def _ignoring_missing(aws: Aws, service: str, operation: str, **arguments) -> bool:
    """One delete call; False when the thing is already gone."""
    try:
        aws.call(service, operation, **arguments)
    except AwsError as error:
        # Application Auto Scaling answers a missing target with a ValidationException "No scalable target found"
        if error.code in ("ObjectNotFoundException", "ResourceNotFoundException") or (
                error.code == "ValidationException" and "no scalable target found" in str(error).lower()):
            return False
        raise
    return True


def remove_endpoint_extras(aws: Aws, name: str, tags: list[dict]) -> list[str]:
    """What goes with an owned endpoint: the scaling policies recorded on it, its scalable target when one
    was recorded, and its log group."""
    removed = []
    recorded = next((tag["Value"] for tag in tags if tag["Key"] == SCALING_TAG_KEY), "")
    policies = [policy for policy in recorded.split(",") if policy]
    resource = scaling_resource(name)
    for policy in policies:
        if _ignoring_missing(aws, "application-autoscaling", "delete_scaling_policy", PolicyName=policy, **resource):
            removed.append(f"scaling policy {policy}")
    if policies and _ignoring_missing(aws, "application-autoscaling", "deregister_scalable_target", **resource):
        removed.append(f"scalable target {resource['ResourceId']}")
    if _ignoring_missing(aws, "logs", "delete_log_group", logGroupName=log_group(name)):
        removed.append(f"log group {log_group(name)}")
    return removed


def remove_alarms(aws: Aws, endpoint: str = "") -> list[str]:
    """The CloudWatch alarms tagged as the project's (and, with ``endpoint``, as that endpoint's)."""
    alarms = aws.pages("cloudwatch", "describe_alarms", "MetricAlarms")
    tag_lists = aws.each("cloudwatch", lambda arn: aws.call("cloudwatch", "list_tags_for_resource",
                                                            ResourceARN=arn).get("Tags", []),
                         [alarm["AlarmArn"] for alarm in alarms])
    names = [alarm["AlarmName"] for alarm, tags in zip(alarms, tag_lists) if owned(tags, endpoint)]
    for start in range(0, len(names), 100):  # DeleteAlarms: at most 100 names per call
        aws.call("cloudwatch", "delete_alarms", AlarmNames=names[start:start + 100])
    return [f"alarm {name}" for name in names]


def teardown(aws: Aws, endpoint: str = "", delete_artifacts_in: str = "") -> list[str]:
    """Delete the project's endpoints (with the scaling policies and log groups that go with them), endpoint
    configs, models and alarms (those of one endpoint, or all), and optionally its S3 objects under a prefix;
    what carries no ownership tag stays, whatever its name."""
    removed = []
    for kind in ("endpoint", "endpoint-config", "model"):  # an endpoint before its config, a config before its model
        resource = SAGEMAKER_RESOURCES[kind]
        stem = _pascal(resource)
        items = aws.pages("sagemaker", f"list_{resource}s", f"{stem}s")
        tag_lists = aws.each("sagemaker", partial(_resource_tags, aws), [item[f"{stem}Arn"] for item in items])
        for item, tags in zip(items, tag_lists):
            if owned(tags, endpoint):
                if kind == "endpoint":
                    removed += remove_endpoint_extras(aws, item[f"{stem}Name"], tags)
                aws.call("sagemaker", f"delete_{resource}", **{f"{stem}Name": item[f"{stem}Name"]})
                removed.append(f"{kind.replace('-', ' ')} {item[f'{stem}Name']}")
    removed += remove_alarms(aws, endpoint)
    if delete_artifacts_in:
        removed += delete_objects(aws, delete_artifacts_in, endpoint)
    return removed


def delete_objects(aws: Aws, s3_prefix: str, endpoint: str = "") -> list[str]:
    """Delete the owned objects under an s3:// prefix, up to 1,000 per request (S3's limit)."""
    bucket, _, key_prefix = s3_prefix.removeprefix("s3://").partition("/")
    keys = [item["Key"] for item in aws.pages("s3", "list_objects_v2", "Contents", Bucket=bucket, Prefix=key_prefix)]
    tag_sets = aws.each("s3", partial(_object_tags, aws, bucket), keys)
    keys = [key for key, tags in zip(keys, tag_sets) if owned(tags, endpoint)]
    for start in range(0, len(keys), 1000):
        batch = keys[start:start + 1000]
        answer = aws.call("s3", "delete_objects", Bucket=bucket,
                          Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True})
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise AwsError(f"s3.delete_objects failed for {len(answer['Errors'])} of {len(batch)} objects, "
                           f"s3://{bucket}/{first.get('Key')}: {first.get('Code')}: {first.get('Message')}")
    return [f"s3://{bucket}/{key}" for key in keys]
