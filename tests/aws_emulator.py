"""A local SageMaker for the tests: moto's server for the control plane, real tritonservers as containers.

No AWS account is reachable. moto in server mode (a real HTTP endpoint) answers S3 and
the SageMaker API for the same boto3 code. moto 5.2.5 has no UpdateEndpoint and never
starts anything, so this module extends moto's backend (not boto3) with what SageMaker
does behind those calls, no kinder than SageMaker:

- an endpoint's container is the model archive from S3, extracted as /opt/ml/model would
  be, served by tritonserver started the way SageMaker's Triton container starts it; the
  endpoint is InService when that container answers /ping. When it does not, the endpoint
  is Failed with SageMaker's reason, which names the failed ping and points at CloudWatch
  (the container's own output is in the endpoint's log group, ``log_group(name)``);
- UpdateEndpoint sets Updating; a new configuration whose container fails goes RollingBack,
  then InService again on the old configuration, with the FailureReason; an update that
  changes the instance type of a variant registered for autoscaling is refused;
- a container's start creates the endpoint's log group in moto's CloudWatch Logs, as SageMaker does;
- a multi-model cold load longer than ``multi_model_ready_wait_s`` (SageMaker: 60 s) is answered
  429 ModelNotReadyException while it goes on;
- real-time invocations keep to SageMaker's limits (``local_server.endpoint_route``);
- a model with ``Containers`` is a serial inference pipeline (``local_server.serial_pipeline``): each
  container its own process, a Triton image's as above, a framework image's (SageMaker's PyTorch
  inference image) ``code/inference.py`` under the inference toolkit's contract
  (``local_server.handler_host``); each response is the next container's request;
- async invocations keep to the async limits, and whatever goes wrong while processing one
  is written to the endpoint's S3 failure path, never lost;
- CreateTransformJob runs a Batch Transform job over the input prefix with the model's containers
  as real processes, SageMaker's limits, statuses and output keys (``tests.emulator_transform``).

``stop()`` undoes the patches to moto's classes.
"""
from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import tarfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import requests
from moto.core.responses import ActionResult
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import SageMakerModelBackend, sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse
from moto.server import ThreadedMotoServer

from local_server import TritonServer
from local_server.endpoint_route import DEFAULT_ACCOUNT, REALTIME_TIMEOUT_S, TIMED_OUT, EndpointRoute
from local_server.handler_host import HandlerContainer
from local_server.multi_model import READY_WAIT_S, MultiModelHost
from local_server.sagemaker_container import sagemaker_environment
from local_server.serial_pipeline import PipelineContainer, SerialPipeline
from local_server.server import TRITON_BINARY, TRITON_LIBS, free_port
from local_server.supervisor import Supervisor, resend_after_restart
from tests.emulator_rollout import BlueGreenRollouts, refuse_scaled_instance_type_change
from tests.emulator_transform import TransformJobs

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
INSTANCE = "ml.g4dn.xlarge"  # moto 5.2.5's list of instance types predates ml.g5
VARIANT = "AllTraffic"
# DescribeEndpoint's FailureReason when the container never answers /ping, as SageMaker words it
# (e.g. github.com/aws/sagemaker-python-sdk/issues/787, awslabs/llm-hosting-container/issues/18).
PING_FAILED = ("The primary container for production variant {variant} did not pass the ping health check. "
               "Please check CloudWatch logs for this endpoint.")
# Asynchronous inference: "large payload sizes (up to 1GB), long processing times (up to one hour)"
# (docs.aws.amazon.com/sagemaker/latest/dg/async-inference.html); InvokeEndpointAsync's
# InvocationTimeoutSeconds: "The default is 15 minutes, or 900 seconds", range 1 to 3600
# (API_runtime_InvokeEndpointAsync).
ASYNC_PAYLOAD_LIMIT = 2**30
ASYNC_INVOCATION_TIMEOUT_S = 900
CONTAINER_START_TIMEOUT_S = 120
TRITON_IMAGE = "sagemaker-tritonserver"  # the repository of SageMaker's Triton images
FRAMEWORK_IMAGES = ("pytorch-inference",)  # framework images whose toolkit serves code/inference.py
_MISSING = object()


class LocalSageMaker:
    def __init__(self, workdir: Path, realtime_timeout_s: float = REALTIME_TIMEOUT_S,
                 async_payload_limit: int = ASYNC_PAYLOAD_LIMIT,
                 async_invocation_timeout_s: float = ASYNC_INVOCATION_TIMEOUT_S, multi_model_budget: int = 2,
                 multi_model_ready_wait_s: float = READY_WAIT_S):
        """The limits default to SageMaker's; a test passes small ones to reach them quickly."""
        self.workdir = Path(workdir)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        self.route = EndpointRoute({}, async_handler=self._invoke_async, timeout_s=realtime_timeout_s)
        self.async_payload_limit = async_payload_limit
        self.async_invocation_timeout_s = async_invocation_timeout_s
        self.containers: dict[str, TritonServer] = {}  # endpoint config name -> its running container
        self.supervisors: dict[str, Supervisor] = {}  # config name -> what replaces its container on a failed /ping
        self.hosts: dict[str, MultiModelHost] = {}  # config name -> the loader in front of a multi-model container
        self.multi_model_budget = multi_model_budget
        self.multi_model_ready_wait_s = multi_model_ready_wait_s  # then 429 ModelNotReadyException, loading on
        self.endpoint_configs: dict[str, str] = {}  # endpoint name -> config name being served
        self.status_history: dict[str, list[str]] = {}  # endpoint name -> every status it was given
        self.lock = threading.Lock()
        self.moto_url = ""
        self._originals: dict[tuple[type, str], object] = {}

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> LocalSageMaker:
        self.moto.start()
        self.moto_url = f"http://127.0.0.1:{self.moto._port}"
        reset_moto(self.moto_url)
        self.route.start()
        self._extend_moto()
        self.rollouts = BlueGreenRollouts(self).install()  # UpdateEndpoint's DeploymentConfig: canary, rollback
        self.transform_jobs = TransformJobs(self).install()  # CreateTransformJob: Batch Transform
        return self

    def stop(self) -> None:
        self.rollouts.stop()
        self.transform_jobs.stop()
        for container in list(self.containers.values()):
            container.stop()
        self.route.stop()
        self.moto.stop()
        self._restore_moto()

    def environment(self) -> dict[str, str]:
        """What a process needs to talk to this SageMaker with unmodified boto3 code."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.moto_url,
                "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.route.url}

    def s3(self):
        return self._client("s3")

    def _client(self, service: str):
        return boto3.client(service, endpoint_url=self.moto_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def log_group(self, endpoint_name: str) -> Path:
        """The local stand-in for CloudWatch log group /aws/sagemaker/Endpoints/<name>: one file per container."""
        return self.workdir / "cloudwatch" / "aws" / "sagemaker" / "Endpoints" / endpoint_name

    def _cloudwatch_log_group(self, endpoint_name: str) -> None:
        """SageMaker creates the endpoint's log group in CloudWatch Logs (moto's) when a container starts."""
        logs = self._client("logs")
        try:
            logs.create_log_group(logGroupName=f"/aws/sagemaker/Endpoints/{endpoint_name}")
        except logs.exceptions.ResourceAlreadyExistsException:
            pass

    def container_logs(self, endpoint_name: str) -> str:
        return "".join(path.read_text(errors="replace") for path in sorted(self.log_group(endpoint_name).glob("*")))

    # -- patches to moto, undone by stop() -------------------------------------------
    def _patch(self, cls: type, name: str, replacement) -> None:
        self._originals.setdefault((cls, name), cls.__dict__.get(name, _MISSING))
        setattr(cls, name, replacement)

    def _restore_moto(self) -> None:
        for (cls, name), original in self._originals.items():
            if original is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, original)
        self._originals.clear()

    def _extend_moto(self) -> None:
        emulator = self
        original_create = SageMakerModelBackend.create_endpoint
        original_delete = SageMakerModelBackend.delete_endpoint

        def create_endpoint(backend, endpoint_name, endpoint_config_name, tags):
            if endpoint_name in backend.endpoints:  # moto 5.2.5 would replace it; SageMaker refuses
                raise ValidationError(f'Cannot create already existing endpoint '
                                      f'"{backend.endpoints[endpoint_name].arn}".')
            endpoint = original_create(backend, endpoint_name, endpoint_config_name, tags)
            emulator._set_status(endpoint, "Creating")  # "Creating: CreateEndpoint is executing."
            threading.Thread(target=emulator._bring_up, args=(endpoint, endpoint_config_name, False),
                             daemon=True).start()
            return endpoint

        def update_endpoint(backend, endpoint_name, endpoint_config_name):
            endpoint = backend.endpoints[endpoint_name]
            config = backend.describe_endpoint_config(endpoint_config_name)  # raises for an unknown config
            refuse_scaled_instance_type_change(backend, endpoint, config)
            # UpdateEndpoint: "When SageMaker receives the request, it sets the endpoint status to Updating."
            emulator._set_status(endpoint, "Updating")
            threading.Thread(target=emulator._bring_up, args=(endpoint, endpoint_config_name, True),
                             daemon=True).start()
            return endpoint.arn

        def delete_endpoint(backend, endpoint_name):
            original_delete(backend, endpoint_name)
            emulator._retire(endpoint_name)

        def update_endpoint_response(response):
            arn = response.sagemaker_backend.update_endpoint(response._get_param("EndpointName"),
                                                             response._get_param("EndpointConfigName"))
            return ActionResult({"EndpointArn": arn})

        self._patch(SageMakerModelBackend, "create_endpoint", create_endpoint)
        self._patch(SageMakerModelBackend, "update_endpoint", update_endpoint)
        self._patch(SageMakerModelBackend, "delete_endpoint", delete_endpoint)
        self._patch(SageMakerResponse, "update_endpoint", update_endpoint_response)

    # -- what SageMaker does behind the API ------------------------------------------
    def _set_status(self, endpoint, status: str, reason: str | None = None) -> None:
        endpoint.failure_reason = reason
        endpoint.endpoint_status = status
        self.status_history.setdefault(endpoint.endpoint_name, []).append(status)

    def _bring_up(self, endpoint, config_name: str, updating: bool) -> None:
        try:
            container = self._start_container(endpoint.endpoint_name, config_name)
        except Exception:  # whatever keeps the container from answering /ping fails the deployment
            reason = PING_FAILED.format(variant=VARIANT)
            if updating:
                # DescribeEndpoint: "RollingBack: ... in the process of rolling back to its previous
                # configuration. Once the rollback completes, endpoint returns to an InService status."
                # The old configuration's container never stopped serving.
                self._set_status(endpoint, "RollingBack", reason)
                self._set_status(endpoint, "InService", reason)
            else:
                # "Failed: Endpoint could not be created, updated, or re-scaled. Use the FailureReason ..."
                self._set_status(endpoint, "Failed", reason)
            return
        with self.lock:
            self.containers[config_name] = container
            # a multi-model host would need its loads replayed, a pipeline its containers: not supervised
            if isinstance(container, TritonServer) and config_name not in self.hosts:
                self.supervisors[config_name] = self._supervise(endpoint.endpoint_name, container)
            previous = self.endpoint_configs.get(endpoint.endpoint_name)
            self.endpoint_configs[endpoint.endpoint_name] = config_name
            self.route.endpoints[endpoint.endpoint_name] = self._route_target(config_name, container)
        if previous and previous != config_name:
            self._stop_container(previous)
        self.serve_config(endpoint, config_name)
        self._set_status(endpoint, "InService")

    def _route_target(self, config_name: str, container):
        """What the runtime route sends an endpoint's requests to: a pipeline, a multi-model host, or a URL."""
        if isinstance(container, SerialPipeline):
            return container
        return self.hosts.get(config_name) or container.sagemaker_url

    def serve_config(self, endpoint, config_name: str) -> None:
        """DescribeEndpoint after an update: the new configuration and its variant's instance counts."""
        config = self._client("sagemaker").describe_endpoint_config(EndpointConfigName=config_name)
        endpoint.endpoint_config_name = config_name
        endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])

    def autoscale_variant(self, endpoint_name: str, instances: int) -> None:
        """What Application Auto Scaling does to a registered variant (UpdateEndpointWeightsAndCapacities):
        its desired and current instance count become ``instances``, within the target's bounds."""
        scaling = self._client("application-autoscaling")
        targets = scaling.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[
            f"endpoint/{endpoint_name}/variant/{VARIANT}"])["ScalableTargets"]
        if not targets or not targets[0]["MinCapacity"] <= instances <= targets[0]["MaxCapacity"]:
            raise ValueError(f"autoscaling cannot set {endpoint_name} to {instances} instances: {targets}")
        endpoint = self._moto_endpoint(endpoint_name)
        endpoint.production_variants[0].update(CurrentInstanceCount=instances, DesiredInstanceCount=instances)

    def _moto_endpoint(self, endpoint_name: str):
        return sagemaker_backends[DEFAULT_ACCOUNT][CREDENTIALS["AWS_DEFAULT_REGION"]].endpoints[endpoint_name]

    def _supervise(self, endpoint_name: str, container: TritonServer) -> Supervisor:
        """SageMaker replaces an instance that fails /ping; what happened goes to the endpoint's log group."""
        def say(line: str) -> None:
            with (self.log_group(endpoint_name) / f"{VARIANT}-supervisor").open("a") as log:
                log.write(line + "\n")

        return Supervisor(container, name=f"endpoint {endpoint_name}", say=say).start()

    def _start_container(self, endpoint_name: str, config_name: str) -> TritonServer | SerialPipeline:
        """Extract the model archive and start the container; its output goes to the endpoint's log group."""
        sagemaker = self._client("sagemaker")
        config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
        log = self.log_group(endpoint_name) / f"{VARIANT}-{config_name}"
        log.parent.mkdir(parents=True, exist_ok=True)
        self._cloudwatch_log_group(endpoint_name)
        if model.get("Containers"):
            return self._start_pipeline(config_name, model, log)
        container = model["PrimaryContainer"]
        if container.get("Mode") == "MultiModel":
            return self._start_multi_model_container(config_name, container, log)
        return self._start_one(container, config_name, log)

    def _start_one(self, container: dict, config_name: str, log: Path) -> TritonServer | HandlerContainer:
        """One container by its image: SageMaker's Triton image, or a framework image serving code/inference.py."""
        try:
            model_dir = self._extract(container["ModelDataUrl"], config_name)
            if any(image in container["Image"] for image in FRAMEWORK_IMAGES):
                return HandlerContainer(model_dir, container.get("Environment", {}), log).start(
                    timeout_s=CONTAINER_START_TIMEOUT_S)
            if TRITON_IMAGE not in container["Image"]:
                raise ValueError(f"the emulator plays SageMaker's Triton and PyTorch images, not {container['Image']}")
            environment = sagemaker_environment(model_dir, local_binary_environment(container, log))
            server = TritonServer(model_dir, sagemaker_mode=True, sagemaker_env=environment, log_path=log)
            return server.start(timeout_s=CONTAINER_START_TIMEOUT_S)
        except Exception as error:  # the serve script's or the server's complaint, as the container prints it
            with log.open("a") as output:
                output.write(f"ERROR: {error}\n")
            raise

    def _start_pipeline(self, config_name: str, model: dict, log: Path) -> SerialPipeline:
        """``Containers``: a serial pipeline (CreateModel's default Mode; moto 5.2.5 keeps no
        InferenceExecutionConfig); every container started, each with its own log, or none left running."""
        pipeline = SerialPipeline([])
        try:
            for position, container in enumerate(model["Containers"], start=1):
                hostname = container.get("ContainerHostname", f"container-{position}")
                process = self._start_one(container, config_name, log.with_name(f"{log.name}-{hostname}"))
                url = process.sagemaker_url if isinstance(process, TritonServer) else process.url
                pipeline.containers.append(PipelineContainer(hostname, url, process))
        except Exception:
            pipeline.stop()
            raise
        return pipeline

    def _start_multi_model_container(self, config_name: str, container: dict, log: Path) -> TritonServer:
        """``Mode: MultiModel``: SageMaker starts the container with SAGEMAKER_MULTI_MODEL=true and loads
        archives from the ModelDataUrl prefix on first use; the same host as the local multi-model mode."""
        workdir = self.workdir / f"{config_name}-{uuid.uuid4().hex[:6]}"
        workdir.mkdir(parents=True)
        environment = {**local_binary_environment(container, log), "SAGEMAKER_MULTI_MODEL": "true"}
        server = TritonServer(workdir, sagemaker_mode=True, sagemaker_env=environment, log_path=log)
        server.start(timeout_s=CONTAINER_START_TIMEOUT_S)
        self.hosts[config_name] = MultiModelHost(server.sagemaker_url, self._s3_archives(container["ModelDataUrl"]),
                                                 workdir, max_loaded=self.multi_model_budget,
                                                 ready_wait_s=self.multi_model_ready_wait_s)
        return server

    def _s3_archives(self, prefix_url: str):
        bucket, prefix = split_s3(prefix_url)
        s3 = self.s3()

        def fetch(target: str) -> bytes:
            try:
                return s3.get_object(Bucket=bucket, Key=f"{prefix}{target}")["Body"].read()
            except s3.exceptions.NoSuchKey:
                raise KeyError(target) from None

        return fetch

    def _extract(self, model_data_url: str, config_name: str) -> Path:
        bucket, key = split_s3(model_data_url)
        model_dir = self.workdir / f"{config_name}-{uuid.uuid4().hex[:6]}" / "model"
        model_dir.mkdir(parents=True)
        archive = self.s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(model_dir, filter="data")
        return model_dir

    def _stop_container(self, config_name: str) -> None:
        with self.lock:
            container = self.containers.pop(config_name, None)
            self.hosts.pop(config_name, None)
            self.supervisors.pop(config_name, None)  # container.stop() below ends its watch
        if container is not None:
            container.stop()

    def _retire(self, endpoint_name: str) -> None:
        with self.lock:
            config_name = self.endpoint_configs.pop(endpoint_name, None)
            self.route.endpoints.pop(endpoint_name, None)
        if config_name:
            self._stop_container(config_name)

    # -- the async front: queue in S3, answer in S3 -------------------------------------
    def _invoke_async(self, endpoint_name: str, headers) -> tuple[int, dict, bytes]:
        sagemaker = self._client("sagemaker")
        config_name = sagemaker.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"]
        async_config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name).get("AsyncInferenceConfig")
        if async_config is None:
            return validation_error(f"Endpoint {endpoint_name} is not an asynchronous endpoint.")
        timeout_s = headers.get("X-Amzn-SageMaker-InvocationTimeoutSeconds")  # the API allows 1 to 3600
        output_config = async_config["OutputConfig"]
        inference_id = uuid.uuid4().hex
        output = f"{output_config['S3OutputPath'].rstrip('/')}/{inference_id}.out"
        failure = f"{output_config['S3FailurePath'].rstrip('/')}/{inference_id}-error.out"
        job = AsyncJob(endpoint_name, headers["X-Amzn-SageMaker-InputLocation"],
                       headers.get("X-Amzn-SageMaker-Content-Type", "application/json"), output, failure,
                       float(timeout_s) if timeout_s else self.async_invocation_timeout_s)
        threading.Thread(target=self._process_async, args=(job,), daemon=True).start()
        answer = json.dumps({"InferenceId": inference_id}).encode()
        return 202, {"Content-Type": "application/json", "X-Amzn-SageMaker-OutputLocation": output,
                     "X-Amzn-SageMaker-FailureLocation": failure}, answer

    def _process_async(self, job: AsyncJob) -> None:
        """Run one queued request; any failure, the emulator's own included, lands in the failure path."""
        try:
            status, content_type, body = self._run_async(job)
        except Exception as error:  # nothing may die silently: the client is polling S3
            status, content_type = 500, "text/plain"
            body = f"InternalFailure: {type(error).__name__}: {error}".encode()
        target = job.output if status == 200 else job.failure
        self._put(target, body, content_type)

    def _run_async(self, job: AsyncJob) -> tuple[int, str, bytes]:
        bucket, key = split_s3(job.input_location)
        size = self.s3().head_object(Bucket=bucket, Key=key)["ContentLength"]
        if size > self.async_payload_limit:
            return 413, "text/plain", (f"ValidationError: the input {job.input_location} is {size} bytes, over the "
                                       f"{self.async_payload_limit} byte limit of asynchronous inference.").encode()
        body = self.s3().get_object(Bucket=bucket, Key=key)["Body"].read()

        def send():
            return requests.post(f"{self.route.endpoints[job.endpoint_name]}/invocations", data=body,
                                 headers={"Content-Type": job.content_type}, timeout=job.timeout_s)

        try:  # a container that died under the request: sent again to its replacement, or to the failure path
            supervisor = self.supervisors.get(self.endpoint_configs.get(job.endpoint_name, ""))
            response = resend_after_restart(send, supervisor, job.timeout_s, lost=(requests.ConnectionError,))
        except requests.Timeout:
            _, message, _ = self.route.model_error(job.endpoint_name, 0, TIMED_OUT)
            return 0, "text/plain", f"ModelError: {message}".encode()
        return (response.status_code, response.headers.get("Content-Type", "application/octet-stream"),
                response.content)

    def _put(self, location: str, body: bytes, content_type: str) -> None:
        bucket, key = split_s3(location)
        self.s3().put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


@dataclass
class AsyncJob:
    """One queued asynchronous request and where its answer goes."""

    endpoint_name: str
    input_location: str
    content_type: str
    output: str
    failure: str
    timeout_s: float


@functools.cache
def local_binary_flags() -> str:
    """The local tritonserver's --help."""
    run = subprocess.run([str(TRITON_BINARY), "--help"], capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "LD_LIBRARY_PATH": str(TRITON_LIBS)})
    return run.stdout + run.stderr


def local_binary_environment(container: dict, log: Path) -> dict[str, str]:
    """The model's Environment for the local tritonserver: an image's flag that this binary lacks is dropped,
    and the container's log says so. The one such flag is ``--http-max-input-size`` (Triton >= 2.68 applies it
    to the SageMaker port; the local 2.51 has none): the route in front refuses bodies over SageMaker's 6 MiB
    limit with SageMaker's own 413 instead, before they reach the container."""
    environment = dict(container.get("Environment", {}))
    words = environment.get("SAGEMAKER_TRITON_ADDITIONAL_ARGS", "").split()
    unknown = [word for word in words if word.startswith("--") and word.split("=")[0] not in local_binary_flags()]
    if unknown:
        environment["SAGEMAKER_TRITON_ADDITIONAL_ARGS"] = " ".join(word for word in words if word not in unknown)
        with log.open("a") as output:
            output.write(f"emulator: the local tritonserver lacks {' '.join(unknown)}: not passed\n")
    return environment


def validation_error(message: str) -> tuple[int, dict, bytes]:
    return 400, {"Content-Type": "application/json", "x-amzn-ErrorType": "ValidationError"}, \
        json.dumps({"message": message}).encode()


def split_s3(url: str) -> tuple[str, str]:
    bucket, key = url.removeprefix("s3://").split("/", 1)
    return bucket, key


def reset_moto(moto_url: str) -> None:
    """moto keeps its accounts' resources in this process, across servers: each SageMaker starts empty."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=30).raise_for_status()


def apply_environment(monkeypatch, emulator: LocalSageMaker) -> None:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in emulator.environment().items():
        monkeypatch.setenv(name, value)
