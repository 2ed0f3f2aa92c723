"""A local SageMaker for the tests: moto's server for the control plane, real tritonservers as containers.

No AWS account is reachable. moto in server mode (a real HTTP endpoint) answers S3 and
the SageMaker API for the same boto3 code. moto 5.2.5 has no UpdateEndpoint and never
starts anything, so this module extends moto's backend (not boto3) with what SageMaker
does behind those calls: an endpoint's container is the model archive from S3,
extracted as /opt/ml/model would be, served by tritonserver started the way SageMaker's
Triton container starts it; the endpoint is InService when that container answers
/ping and Failed, with the container's reason, when it does not. Invocations reach the
containers through ``local_server.endpoint_route`` (``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``).
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import uuid
from pathlib import Path

import boto3
from moto.core.responses import ActionResult
from moto.sagemaker.models import SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse
from moto.server import ThreadedMotoServer

from local_server import TritonServer
from local_server.endpoint_route import EndpointRoute
from local_server.server import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class LocalSageMaker:
    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        self.route = EndpointRoute({}, async_handler=self._invoke_async)
        self.containers: dict[str, TritonServer] = {}  # endpoint config name -> its running container
        self.endpoint_configs: dict[str, str] = {}  # endpoint name -> config name being served
        self.lock = threading.Lock()
        self.moto_url = ""

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> "LocalSageMaker":
        self.moto.start()
        self.moto_url = f"http://127.0.0.1:{self.moto._port}"
        self.route.start()
        self._extend_moto()
        return self

    def stop(self) -> None:
        for container in list(self.containers.values()):
            container.stop()
        self.route.stop()
        self.moto.stop()

    def environment(self) -> dict[str, str]:
        """What a process needs to talk to this SageMaker with unmodified boto3 code."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.moto_url,
                "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.route.url}

    def s3(self):
        return self._client("s3")

    def _client(self, service: str):
        return boto3.client(service, endpoint_url=self.moto_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    # -- what SageMaker does behind the API ------------------------------------------
    def _extend_moto(self) -> None:
        emulator = self
        original_create = SageMakerModelBackend.create_endpoint
        original_delete = SageMakerModelBackend.delete_endpoint

        def create_endpoint(backend, endpoint_name, endpoint_config_name, tags):
            endpoint = original_create(backend, endpoint_name, endpoint_config_name, tags)
            endpoint.endpoint_status = "Creating"
            threading.Thread(target=emulator._bring_up, args=(endpoint, endpoint_config_name, False),
                             daemon=True).start()
            return endpoint

        def update_endpoint(backend, endpoint_name, endpoint_config_name):
            endpoint = backend.endpoints[endpoint_name]
            backend.describe_endpoint_config(endpoint_config_name)  # raises for an unknown config
            endpoint.endpoint_status = "Updating"
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

        SageMakerModelBackend.create_endpoint = create_endpoint
        SageMakerModelBackend.update_endpoint = update_endpoint
        SageMakerModelBackend.delete_endpoint = delete_endpoint
        SageMakerResponse.update_endpoint = update_endpoint_response

    def _bring_up(self, endpoint, config_name: str, updating: bool) -> None:
        try:
            container = self._start_container(config_name)
        except Exception as error:  # whatever stops the container from serving fails the endpoint
            reason = str(error).splitlines()[0] + "".join(
                f" {line.strip()}" for line in str(error).splitlines()[1:4] if line.startswith("  "))
            if updating:  # SageMaker rolls a failed update back: the old configuration keeps serving
                endpoint.endpoint_status = "InService"
                endpoint.failure_reason = f"update to {config_name} failed: {reason}"
            else:
                endpoint.endpoint_status, endpoint.failure_reason = "Failed", reason
            return
        with self.lock:
            self.containers[config_name] = container
            previous = self.endpoint_configs.get(endpoint.endpoint_name)
            self.endpoint_configs[endpoint.endpoint_name] = config_name
            self.route.endpoints[endpoint.endpoint_name] = container.sagemaker_url
        if previous and previous != config_name:
            self._stop_container(previous)
        endpoint.endpoint_config_name = config_name
        endpoint.failure_reason = None
        endpoint.endpoint_status = "InService"

    def _start_container(self, config_name: str) -> TritonServer:
        sagemaker = self._client("sagemaker")
        config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
        container = model["PrimaryContainer"]
        bucket, key = container["ModelDataUrl"].removeprefix("s3://").split("/", 1)
        model_dir = self.workdir / f"{config_name}-{uuid.uuid4().hex[:6]}" / "model"
        model_dir.mkdir(parents=True)
        archive = self.s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(model_dir, filter="data")
        environment = dict(container.get("Environment", {}))
        return TritonServer(model_dir, sagemaker_mode=True, sagemaker_env=environment,
                            sagemaker_default_model=environment.get("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"),
                            log_path=model_dir.parent / "container.log").start(timeout_s=120)

    def _stop_container(self, config_name: str) -> None:
        with self.lock:
            container = self.containers.pop(config_name, None)
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
        output_config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)[
            "AsyncInferenceConfig"]["OutputConfig"]
        inference_id = uuid.uuid4().hex
        output = f"{output_config['S3OutputPath'].rstrip('/')}/{inference_id}.out"
        failure = f"{output_config['S3FailurePath'].rstrip('/')}/{inference_id}-error.out"
        input_location = headers["X-Amzn-SageMaker-InputLocation"]
        content_type = headers.get("X-Amzn-SageMaker-Content-Type", "application/json")
        threading.Thread(target=self._process_async, daemon=True,
                         args=(endpoint_name, input_location, content_type, output, failure)).start()
        answer = json.dumps({"InferenceId": inference_id}).encode()
        return 202, {"Content-Type": "application/json", "X-Amzn-SageMaker-OutputLocation": output,
                     "X-Amzn-SageMaker-FailureLocation": failure}, answer

    def _process_async(self, endpoint_name: str, input_location: str, content_type: str, output: str,
                       failure: str) -> None:
        import requests

        s3 = self.s3()
        bucket, key = input_location.removeprefix("s3://").split("/", 1)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        response = requests.post(f"{self.route.endpoints[endpoint_name]}/invocations", data=body,
                                 headers={"Content-Type": content_type}, timeout=300)
        target = output if response.status_code == 200 else failure
        bucket, key = target.removeprefix("s3://").split("/", 1)
        s3.put_object(Bucket=bucket, Key=key, Body=response.content,
                      ContentType=response.headers.get("Content-Type", "application/octet-stream"))


def apply_environment(monkeypatch, emulator: LocalSageMaker) -> None:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in emulator.environment().items():
        monkeypatch.setenv(name, value)
