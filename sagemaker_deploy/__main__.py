"""``python -m sagemaker_deploy``: package, deploy, update, invoke-async, teardown.

    python -m sagemaker_deploy deploy --repository build/gpu --endpoint vision --bucket B --role ARN --region R
    python -m sagemaker_deploy update --repository build/gpu --endpoint vision --bucket B --role ARN --region R
    python -m sagemaker_deploy deploy --repository build/gpu --endpoint lama --default-model ensemble_lama \\
        --async-output s3://B/lama --autoscale-to-zero ...
    python -m sagemaker_deploy invoke-async --endpoint lama --input-prefix s3://B/lama/input IMAGE MASK -o OUT.png
    python -m sagemaker_deploy teardown [--endpoint vision] [--delete-artifacts s3://B/prefix] --region R

Real-time requests go through the clients: python -m clients.classify IMAGE --protocol sagemaker-endpoint
--endpoint-name vision --region R. ``--dry-run`` prints every AWS call with its arguments and calls nothing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from sagemaker_deploy.async_inference import AsyncFailed, invoke_async, scale_to_zero
from sagemaker_deploy.aws import Aws, AwsError
from sagemaker_deploy.deploy import DEFAULT_INSTANCE, DEFAULT_TRITON_VERSION, DeployFailed, DeployRequest, deploy, \
    teardown, update
from sagemaker_deploy.package import PackageError, make_archive


def _release_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, required=True, help="a built gpu repository")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--role", required=True, help="SageMaker execution role ARN")
    parser.add_argument("--prefix", default="visual-inspection-triton", help="S3 key prefix of the archives")
    parser.add_argument("--default-model", default="ensemble_dali_inception")
    parser.add_argument("--instance-type", default=DEFAULT_INSTANCE)
    parser.add_argument("--triton-version", default=DEFAULT_TRITON_VERSION)
    parser.add_argument("--thread-count", type=int, help="SAGEMAKER_TRITON_THREAD_COUNT")
    parser.add_argument("--async-output", default="", help="s3://bucket/prefix: make an asynchronous endpoint")
    parser.add_argument("--max-concurrent-invocations", type=int, default=4)
    parser.add_argument("--autoscale-to-zero", action="store_true", help="async only: scale to 0 instances when idle")
    parser.add_argument("--poll-s", type=float, default=30.0)
    parser.add_argument("--wait-timeout-s", type=float, default=3600.0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sagemaker_deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--region", help="AWS region (default: boto3's)")
    parser.add_argument("--dry-run", action="store_true", help="print every AWS call, call nothing")
    commands = parser.add_subparsers(dest="command", required=True)
    package = commands.add_parser("package", help="check the repository and write model.tar.gz")
    package.add_argument("--repository", type=Path, required=True)
    package.add_argument("--default-model", default="ensemble_dali_inception")
    package.add_argument("-o", "--out", type=Path, default=Path("build/sagemaker/model.tar.gz"))
    _release_arguments(commands.add_parser("deploy", help="create a new endpoint"))
    _release_arguments(commands.add_parser("update", help="blue/green update of an endpoint to a new version"))
    async_call = commands.add_parser("invoke-async", help="inpaint through an async ensemble_lama endpoint")
    async_call.add_argument("--endpoint", required=True)
    async_call.add_argument("--input-prefix", required=True, help="s3://bucket/prefix for request bodies")
    async_call.add_argument("image", type=Path)
    async_call.add_argument("mask", type=Path)
    async_call.add_argument("-o", "--output", type=Path, required=True)
    async_call.add_argument("--timeout-s", type=float, default=900.0)
    async_call.add_argument("--poll-s", type=float, default=5.0)
    down = commands.add_parser("teardown", help="delete the project's endpoints, configs and models")
    down.add_argument("--endpoint", default="", help="only this endpoint and its configs and models")
    down.add_argument("--delete-artifacts", default="", help="also delete the S3 objects under this s3:// prefix")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, aws: Aws) -> None:
    if args.command == "package":
        packed, bls = make_archive(args.repository, args.default_model, args.out)
        print(f"wrote {args.out}: {', '.join(packed)}" + (f"; BLS-only: {', '.join(bls)}" if bls else ""))
    elif args.command in ("deploy", "update"):
        with tempfile.TemporaryDirectory() as workdir:
            request = DeployRequest(args.repository, args.endpoint, args.bucket, args.role, aws.region or "",
                                    args.prefix, args.default_model, args.instance_type, args.triton_version,
                                    args.thread_count, args.async_output, args.max_concurrent_invocations,
                                    Path(workdir), args.wait_timeout_s, args.poll_s)
            (deploy if args.command == "deploy" else update)(aws, request)
        if args.autoscale_to_zero:
            scale_to_zero(aws, args.endpoint)
    elif args.command == "invoke-async":
        inpaint_async(aws, args)
    else:
        for line in teardown(aws, args.endpoint, args.delete_artifacts):
            print(f"deleted {line}")


def inpaint_async(aws: Aws, args: argparse.Namespace) -> None:
    from PIL import Image

    from builders import ensemble_lama
    from clients.classify import encoded_batch
    from clients.protocols import parse_sagemaker_response, sagemaker_body

    inputs = {ensemble_lama.IMAGE.name: encoded_batch([args.image.read_bytes()]),
              ensemble_lama.MASK.name: encoded_batch([args.mask.read_bytes()])}
    body, content_type = sagemaker_body(inputs, [ensemble_lama.INPAINTED.name], binary=True)
    answer, answer_type = invoke_async(aws, args.endpoint, body, content_type, args.input_prefix,
                                       args.timeout_s, args.poll_s)
    if aws.dry_run:
        return
    result = parse_sagemaker_response(answer, answer_type).as_numpy(ensemble_lama.INPAINTED.name)[0]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(result).save(args.output)
    print(f"inpainted {args.image} -> {args.output}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.region is None:
        import boto3

        args.region = boto3.session.Session().region_name
    aws = Aws(args.region, dry_run=args.dry_run)
    try:
        run(args, aws)
    except (AwsError, DeployFailed, PackageError, AsyncFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
