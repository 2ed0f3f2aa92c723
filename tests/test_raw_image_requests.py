"""Lookout-style raw-image requests: ``deploy --lookout-api`` (a serial inference pipeline) and the local route.

A former Lookout for Vision user sends the image's bytes as ``image/jpeg`` or ``image/png``
and reads DetectAnomalies' JSON. Here through boto3 against the emulated serial pipeline
(real processes: the adapters under the inference toolkit's contract, the Triton container)
and through ``local_server.lookout_route``; every answer must equal the pipeline's own
``LOOKOUT`` output over Triton's HTTP route for the same image.
"""
from __future__ import annotations

import io
import json
import socket
import struct
import zlib
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from builders import defect_inspection, defect_router
from clients.classify import encoded_batch
from clients.protocols import Route, infer, sagemaker_body
from local_server import TritonServer
from local_server.endpoint_route import REALTIME_BODY_LIMIT, EndpointRoute
from local_server.__main__ import main as local_server_main
from local_server.lookout_route import lookout_route, stop_lookout_route
from local_server.serial_pipeline import PipelineContainer, SerialPipeline
from sagemaker_deploy.__main__ import main as deploy_main
from sagemaker_deploy.deploy import DeployRequest, deploy, teardown
from tests.aws_emulator import INSTANCE, ROLE, apply_environment

BUCKET = "lookout-models"
ENDPOINT = "pcb-lookout"


@pytest.fixture(scope="module")
def pipeline_name(board) -> str:
    return defect_inspection.name(board)


@pytest.fixture(scope="module")
def images(board) -> dict[str, bytes]:
    """The sample board as PNG (its own file) and as JPEG."""
    png = (Path(board.labels).parent / "image.png").read_bytes()
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, format="JPEG", quality=90)
    return {"image/png": png, "image/jpeg": buffer.getvalue()}


def triton_lookout(server, pipeline: str, image: bytes) -> dict:
    """The pipeline's LOOKOUT output over Triton's own HTTP route."""
    outputs = infer(Route("http-binary", server.http_url), pipeline,
                    {defect_inspection.INPUT.name: encoded_batch([image])}, [defect_router.LOOKOUT.name])
    return json.loads(outputs[defect_router.LOOKOUT.name].reshape(-1)[0])


def runtime(url: str):
    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def over_the_pixel_limit() -> bytes:
    """A PNG whose header declares one pixel more per side than the pipeline's guard takes (a valid signature and
    IHDR; the guard refuses it from the header, before any decoding)."""
    side = int(defect_inspection.MAX_PIXELS ** 0.5) + 1
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def bad_requests(images) -> dict[str, tuple[str, bytes, int, str, str]]:
    """name -> (content type, body, original status, container, first line of its reason)."""
    triton_json, _ = sagemaker_body({defect_inspection.INPUT.name: encoded_batch([images["image/jpeg"]])},
                                    [defect_router.LOOKOUT.name], binary=False)
    return {
        "not an image": ("image/jpeg", b"hello, Lookout", 400, "lookout-request", "the body is not a JPEG image"),
        "type not taken": ("image/gif", b"GIF89a\x01\x00\x01\x00", 415, "lookout-request",
                           "content type image/gif is not taken: send image/jpeg or image/png"),
        "over the pixel limit": ("image/png", over_the_pixel_limit(), 400, "triton", "4097x4097"),
        "empty body": ("image/png", b"", 400, "lookout-request", "the body is empty"),
        "Triton payload as an image": ("image/jpeg", triton_json, 400, "lookout-request",
                                       "the body is not a JPEG image"),
        "image as a Triton binary payload": ("application/vnd.sagemaker-triton.binary+json;json-header-size=10",
                                             images["image/jpeg"], 415, "lookout-request",
                                             "application/vnd.sagemaker-triton.binary+json is a Triton payload type"),
        # the toolkit decodes an application/json body as UTF-8 before input_fn: a JPEG fails there, a 500
        "image as Triton JSON": ("application/json", images["image/jpeg"], 500, "lookout-request",
                                 "'utf-8' codec can't decode byte 0xff"),
    }


def check_refused(client, endpoint: str, case: tuple[str, bytes, int, str, str]) -> str:
    """Checks the refusal SageMaker would give; returns its original message."""
    content_type, body, status, container, reason = case
    with pytest.raises(client.exceptions.ModelError) as raised:
        client.invoke_endpoint(EndpointName=endpoint, ContentType=content_type, Body=body)
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424 and error["OriginalStatusCode"] == status
    kind = "client" if status < 500 else "server"
    assert error["Error"]["Message"].startswith(f"Received {kind} error ({status}) from {container} with message")
    assert reason in error["OriginalMessage"].splitlines()[0]
    return error["OriginalMessage"]


# -- the emulated SageMaker serial pipeline ----------------------------------------------

@pytest.fixture(scope="module")
def endpoint(local_sagemaker, cpu_repository, pipeline_name, tmp_path_factory):
    """``deploy --lookout-api`` of the sample board's pipeline on the local SageMaker."""
    from sagemaker_deploy.aws import Aws

    with pytest.MonkeyPatch.context() as patch:
        apply_environment(patch, local_sagemaker)
        aws = Aws("us-east-1", say=lambda line: None)
        request = DeployRequest(cpu_repository, ENDPOINT, BUCKET, ROLE, "us-east-1", default_model=pipeline_name,
                                instance_type=INSTANCE, workdir=tmp_path_factory.mktemp("lookout-deploy"), poll_s=0.5,
                                wait_timeout_s=240, allow_cpu_target=True, lookout_api=True)
        release = deploy(aws, request)
        yield aws, release
        teardown(aws, ENDPOINT, f"s3://{BUCKET}/")


def test_the_model_is_a_serial_pipeline_around_the_triton_container_with_ownership_tags(endpoint):
    aws, release = endpoint
    model = aws.call("sagemaker", "describe_model", ModelName=release.name)
    hostnames = [container["ContainerHostname"] for container in model["Containers"]]
    assert hostnames == ["lookout-request", "triton", "lookout-answer"]
    adapter, triton = model["Containers"][0], model["Containers"][1]
    assert "pytorch-inference" in adapter["Image"] and triton["Image"] == release.image_uri
    assert adapter["Environment"]["LOOKOUT_OUTPUT"] == defect_router.LOOKOUT.name
    keys = [item["Key"] for item in aws.call("s3", "list_objects_v2", Bucket=BUCKET)["Contents"]]
    assert sorted(key.rsplit("/", 1)[1] for key in keys) == ["lookout-adapter.tar.gz", "model.tar.gz"]
    tags = aws.call("s3", "get_object_tagging", Bucket=BUCKET, Key=keys[0])["TagSet"]
    assert {"Key": "visual-inspection-triton:endpoint", "Value": ENDPOINT} in tags


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png"])
def test_raw_images_through_boto3_answer_the_triton_routes_lookout_output(endpoint, local_sagemaker, server, images,
                                                                          pipeline_name, content_type):
    answer = runtime(local_sagemaker.route.url).invoke_endpoint(EndpointName=ENDPOINT, ContentType=content_type,
                                                                Body=images[content_type])
    assert answer["ContentType"] == "application/json"
    lookout = json.loads(answer["Body"].read())
    assert set(lookout) == {"DetectAnomalyResult"}
    assert lookout == triton_lookout(server, pipeline_name, images[content_type])


@pytest.mark.parametrize("case", ["not an image", "type not taken", "over the pixel limit", "empty body",
                                  "Triton payload as an image", "image as a Triton binary payload",
                                  "image as Triton JSON"])
def test_bad_input_gets_the_status_sagemaker_gives_with_a_one_line_reason(endpoint, local_sagemaker, images, case):
    message = check_refused(runtime(local_sagemaker.route.url), ENDPOINT, bad_requests(images)[case])
    reason = message.splitlines()[0]  # the inference toolkit appends its traceback after it, as on SageMaker
    assert bad_requests(images)[case][4] in reason and "Traceback" not in reason


def test_refused_combinations_say_why_in_one_line_before_any_aws_call(endpoint, cpu_repository, capsys):
    aws, _ = endpoint
    models_before = aws.call("sagemaker", "list_models")["Models"]
    common = ["--region", "us-east-1", "deploy", "--lookout-api", "--allow-cpu-target", "--repository",
              str(cpu_repository), "--endpoint", "refused", "--bucket", BUCKET, "--role", ROLE]
    for extra, words in ((["--async-output", f"s3://{BUCKET}/async"], "can only receive asynchronous invocations"),
                         (["--multi-model"], "at most one MultiModel container")):
        assert deploy_main([*common, *extra]) == 2
        printed = capsys.readouterr().err.strip()
        assert words in printed and len(printed.splitlines()) == 1
    assert deploy_main(common) == 1  # the default model, ensemble_dali_inception, gives no Lookout answer
    printed = capsys.readouterr().err.strip()
    assert "ensemble_dali_inception has no output LOOKOUT" in printed and len(printed.splitlines()) == 1
    assert aws.call("sagemaker", "list_models")["Models"] == models_before


# -- the local route (python -m local_server ... --lookout-api) ------------------------------

@pytest.fixture(scope="module")
def local_route(cpu_repository, pipeline_name, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lookout-route")
    triton = TritonServer(cpu_repository, sagemaker_default_model=pipeline_name, sagemaker_mode=True,
                          log_path=folder / "tritonserver.log").start()
    route = lookout_route(triton, folder, "local")
    yield route
    stop_lookout_route(route)
    triton.stop()


def test_the_local_route_answers_raw_images_and_refuses_bad_ones_like_the_endpoint(local_route, server, images,
                                                                                   pipeline_name):
    client = runtime(local_route.url)
    for content_type, image in images.items():
        answer = client.invoke_endpoint(EndpointName="local", ContentType=content_type, Body=image)
        assert json.loads(answer["Body"].read()) == triton_lookout(server, pipeline_name, image)
    cases = bad_requests(images)
    for name in ("not an image", "over the pixel limit", "image as a Triton binary payload"):
        check_refused(client, "local", cases[name])


def test_the_local_route_keeps_sagemakers_real_time_limits(local_route, images):
    request_adapter = local_route.endpoints["local"].containers[0]
    with socket.create_server(("127.0.0.1", 0)) as silent:  # a Triton that takes the request and never answers
        triton = PipelineContainer("triton", f"http://127.0.0.1:{silent.getsockname()[1]}")
        stuck = SerialPipeline([request_adapter, triton])
        with EndpointRoute({"stuck": stuck}, timeout_s=0.5) as route, pytest.raises(ClientError) as raised:
            runtime(route.url).invoke_endpoint(EndpointName="stuck", ContentType="image/png", Body=images["image/png"])
    error = raised.value.response
    assert error["Error"]["Code"] == "ModelError" and error["OriginalStatusCode"] == 0
    assert error["Error"]["Message"].startswith("Received server error (0) from triton with message \"Your invocation "
                                                "timed out while waiting for a response from container triton.")
    forwarded = local_route.requests_forwarded
    with pytest.raises(ClientError) as raised:  # over InvokeEndpoint's 6 MB: refused before the first container
        runtime(local_route.url).invoke_endpoint(EndpointName="local", ContentType="image/jpeg",
                                                 Body=images["image/jpeg"] + bytes(REALTIME_BODY_LIMIT))
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert local_route.requests_forwarded == forwarded


def test_the_local_route_needs_the_servers_sagemaker_routes(cpu_repository, tmp_path):
    with pytest.raises(ValueError, match="--sagemaker-model"):
        lookout_route(TritonServer(cpu_repository), tmp_path, "local")


def test_python_m_local_server_refuses_a_lookout_route_without_a_lookout_pipeline(cpu_repository, capsys):
    for extra, words in (([], "needs a repository and --sagemaker-model"),
                         (["--sagemaker-model", "ensemble_dali_inception"], "has no output LOOKOUT")):
        with pytest.raises(SystemExit) as raised:  # before any server starts
            local_server_main([str(cpu_repository), "--lookout-api", "local", "--once", *extra])
        assert raised.value.code == 2 and words in capsys.readouterr().err
