"""``python -m local_server REPOSITORY``: serve a model repository with a real tritonserver.

Runs until Ctrl-C (or ``--once``: start, report ready, stop). ``--sagemaker-mode`` starts
the server the way SageMaker's Triton container does: SageMaker routes only, explicit
model control, only the default model and what it needs loaded.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from local_server.server import SAGEMAKER_DEFAULT_PORT, ServerError, TritonServer

DEFAULT_MODEL = "ensemble_dali_inception"


def docker_equivalent(repository: Path, sagemaker_model: str | None) -> str:
    """The same server from NVIDIA's container on a GPU machine (the ``gpu`` repository)."""
    sagemaker = (f" \\\n  -p8080:8080 -e SAGEMAKER_TRITON_DEFAULT_MODEL_NAME={sagemaker_model}"
                 if sagemaker_model else "")
    flags = " --allow-sagemaker=true --sagemaker-port=8080" if sagemaker_model else ""
    return (f"docker run --gpus=all --rm --shm-size=1g -p8000:8000 -p8001:8001 -p8002:8002{sagemaker} \\\n"
            f"  -v {repository.resolve()}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\\n"
            f"  tritonserver --model-repository=/models{flags}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--sagemaker-port", type=int, default=SAGEMAKER_DEFAULT_PORT)
    parser.add_argument("--sagemaker-model", default=None,
                        help=f"serve SageMaker's /ping and /invocations for this model (e.g. {DEFAULT_MODEL})")
    parser.add_argument("--sagemaker-mode", action="store_true",
                        help="start exactly like SageMaker's Triton container (default model: "
                             f"--sagemaker-model or {DEFAULT_MODEL})")
    parser.add_argument("--log-file", type=Path, help="save the server log here (default: stream it)")
    parser.add_argument("--once", action="store_true", help="stop as soon as the server is ready")
    parser.add_argument("--print-docker", action="store_true",
                        help="print the equivalent docker run of NVIDIA's tritonserver image and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.print_docker:
        print(docker_equivalent(args.repository, args.sagemaker_model))
        return 0
    sagemaker_model = args.sagemaker_model or (DEFAULT_MODEL if args.sagemaker_mode else None)
    server = TritonServer(args.repository, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, sagemaker_port=args.sagemaker_port,
                          sagemaker_default_model=sagemaker_model, sagemaker_mode=args.sagemaker_mode,
                          log_path=args.log_file, stream_log=args.log_file is None)
    try:
        server.start()
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(_addresses(server), flush=True)
    if not args.once:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while server.is_running():
                time.sleep(1)
        except (KeyboardInterrupt, SystemExit):
            pass
    server.stop()
    print(f"tritonserver (pid {server.process.pid}) stopped", flush=True)
    return 0 if server.process.returncode in (0, -signal.SIGTERM) else 1


def _addresses(server: TritonServer) -> str:
    lines = [f"tritonserver ready (pid {server.process.pid}) on {server.repository}"]
    if not server.sagemaker_mode:
        lines += [f"  HTTP     {server.http_url}", f"  gRPC     {server.grpc_url}",
                  f"  metrics  127.0.0.1:{server.metrics_port}"]
    if server.sagemaker_default_model:
        lines.append(f"  SageMaker {server.sagemaker_url}/invocations -> {server.sagemaker_default_model}")
    if not server.stream_log:
        lines.append(f"  log      {server.log_path}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
