"""``python -m builders``: build a Triton model repository for the gpu or cpu target."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from builders import inception, lama
from builders.declaration import DEFAULT_LAMA_FORMAT, TARGETS, BuildOptions
from builders.load_shedding import DEFAULT_CAPACITY_RPS, DEFAULT_LATENCY_BUDGET_S, parse_instances
from builders.repository import build_repository
from products import DEFAULT_STORE, find


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m builders", description=__doc__)
    parser.add_argument("--target", choices=TARGETS, default="cpu",
                        help="gpu: native backends (NVIDIA/SageMaker images); cpu: python-backend runners")
    parser.add_argument("--out", type=Path, required=True, help="repository folder to (re)build")
    parser.add_argument("--inception-format", choices=sorted(inception.FORMATS), default="onnx")
    parser.add_argument("--inception-weights", type=Path,
                        help="inception_v3_2016_08_28_frozen.pb or a Keras ImageNet .weights.h5 file")
    parser.add_argument("--inception-tensorrt", action="store_true",
                        help="gpu: run Inception V3 through ONNX Runtime's TensorRT provider in FP16 "
                             "(engines built at load time, cached on the instance)")
    parser.add_argument("--lama-format", choices=sorted(lama.FORMATS),
                        help="default per target: " + ", ".join(f"{target}: {name}"
                                                                for target, name in DEFAULT_LAMA_FORMAT.items()))
    parser.add_argument("--lama-weights", type=Path,
                        help="big-lama best.ckpt, or a TorchScript / state-dict file of the generator")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights used without a file")
    parser.add_argument("--product", action="append", default=[], metavar="NAME|PATH",
                        help="build this product's inspection pipeline: its name in --products-store, or its "
                             "product.json (repeat for several; products the repository already serves are rebuilt too)")
    parser.add_argument("--products-store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--models", nargs="+", default=(), metavar="NAME",
                        help="build only these models (default: all)")
    parser.add_argument("--latency-budget-s", type=float, default=DEFAULT_LATENCY_BUDGET_S,
                        help="longest a request may take before it is refused: every queue is sized and timed "
                             f"from it (default {DEFAULT_LATENCY_BUDGET_S:g}; under SageMaker's 60 s limit)")
    parser.add_argument("--capacity-rps", type=float, default=DEFAULT_CAPACITY_RPS,
                        help="requests/s the deployment serves (python -m benchmarks.overload measures it); "
                             f"queues hold what it serves within the budget (default {DEFAULT_CAPACITY_RPS:g}, "
                             "measured on the 2-core development machine)")
    parser.add_argument("--admission-gate", action="store_true",
                        help="the guard opening each pipeline admits no more than --capacity-rps requests/s and "
                             "refuses the rest before any decoding (config parameter admission_rps); give the "
                             "capacity measured for the deployment")
    parser.add_argument("--instances", nargs="+", default=[], metavar="MODEL=N",
                        help="instance_group count per model (default 1 each)")
    parser.add_argument("--triton-image", default="",
                        help="gpu: the SageMaker Triton image version the repository is for (default: the "
                             "deploy default); ensembles get backpressure where its Triton has it (>= 2.63)")
    parser.add_argument("--configs-only", action="store_true",
                        help="write config.pbtxt and model files, skip the weights (regenerates model_repository/)")
    return parser.parse_args(argv)


def quiet_third_party_logs() -> None:
    """TensorFlow and tf2onnx narrate every step; keep the build log to what this project says."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("tensorflow", "tf2onnx", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    quiet_third_party_logs()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        products = tuple(find(reference, args.products_store) for reference in args.product)
        instances = parse_instances(args.instances)
    except ValueError as error:  # ProductError, ServingOptionError
        logging.error("build failed: %s", error)
        return 2
    options = BuildOptions(target=args.target, inception_format=args.inception_format,
                           inception_weights=args.inception_weights, inception_tensorrt=args.inception_tensorrt,
                           lama_format=args.lama_format or "",
                           lama_weights=args.lama_weights, seed=args.seed,
                           configs_only=args.configs_only, models=tuple(args.models),
                           products=products, latency_budget_s=args.latency_budget_s,
                           capacity_rps=args.capacity_rps, admission_gate=args.admission_gate,
                           instances=instances, triton_image=args.triton_image)
    try:
        built = build_repository(args.out, options)
    except ValueError as error:  # WeightsError, ProductError, ServingOptionError, unknown models: it says which
        logging.error("build failed: %s", error)
        return 2
    for model_dir in built:
        print(f"built {model_dir}")
    print(f"{options.target} repository ready in {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
