"""``python -m defect_classifier``: train, evaluate and register a product's defect models; approve; status.

    python -m defect_classifier train --product pcb --dataset build/dataset --test-dataset build/dataset-unseen \\
        --repository build/cpu [--repository build/gpu] [--epochs 30] [--params best.json]
    python -m defect_classifier train --product cookie --dataset my-lookout-dataset/ --repository build/cpu
    python -m defect_classifier tune --product pcb --dataset build/dataset --repository build/cpu [--trials 20]
    python -m defect_classifier approve --product pcb --repository build/cpu --version 2 [--url 127.0.0.1:8000]
    python -m defect_classifier status --product pcb --repository build/cpu
    python -m defect_classifier register --product pcb --repository build/gpu --version 2 --bucket B --region R
    python -m defect_classifier approve --product pcb --repository build/gpu --package ARN --description "F1 0.97"
    python -m defect_classifier reject --product pcb --repository build/gpu --package ARN --description "misses C2"
    python -m defect_classifier status --product pcb --registry --region R

``--product`` names a product the repository serves (it may be left out when it serves
one). A dataset is a Lookout for Vision dataset (manifests or ``normal/`` and
``anomaly/`` folders, local or ``s3://``), synthetic (``defect_data.pipeline``) or real
photos; without ``--test-dataset`` its own test split, or a part held out, tests.
``train`` registers the product's models as the next version (not served yet); ``approve``
serves a version only if its validation F1 beats the served one's, and with ``--url``
asks a running server (explicit model control) to load it.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from defect_classifier import data, tuning
from defect_classifier.evaluation import score_text
from defect_classifier.training import TrainSettings
from model_versions import local, model_packages, model_registry
from model_versions.model_packages import APPROVED
from model_versions.repository import served_version
from products import DEFAULT_STORE, ProductError, find, in_repository
from sagemaker_deploy.aws import Aws, AwsError
from sagemaker_deploy.deploy import DEFAULT_INSTANCE, DEFAULT_TRITON_VERSION
from sagemaker_deploy.package import PackageError


def _product(args):
    """The product asked for: from the repository that serves it, else from the store."""
    repository = getattr(args, "repository", None)
    if isinstance(repository, list):
        repository = repository[0]
    if args.product is None:
        served = in_repository(repository) if repository else []
        if len(served) != 1:
            names = ", ".join(p.name for p in served) or "none"
            raise local.RegistryError(f"name the product with --product (products in {repository}: {names})")
        return served[0]
    return local.product_of(repository, args.product) if repository else find(args.product, args.products_store)


def _train(args) -> int:
    from defect_classifier.pipeline import run

    explicit = {name: getattr(args, name) for name in ("epochs", "seed") if getattr(args, name) is not None}
    settings = replace(tuning.load_params(args.params) if args.params else TrainSettings(), **explicit)
    result = run(args.product, args.dataset, args.test_dataset, args.repository, settings, args.validation_fraction)
    for name, record in result.reports.items():
        splits = record["splits"]
        print(f"{name}: validation F1 {splits['validation']['f1']:.4f}, test F1 {splits['test']['f1']:.4f}"
              f"{local.mean_iou_text(splits)}")
        for label, entry in splits["test"]["per_label"].items():
            print(f"    test {label:11s} precision {entry['precision']:.3f} recall {entry['recall']:.3f} "
                  f"F1 {score_text(entry['f1'])} ({entry['support']})")
    for repository, version in result.versions.items():
        print(f"registered version {version} of {', '.join(local.models(args.product))} in {repository} "
              f"(reports: {repository}/{{model}}/{version}/evaluation.md, confusion_matrix.png)")
        print(f"  serve it: python -m defect_classifier approve --product {args.product.name} "
              f"--repository {repository} --version {version}")
    return 0


def _approve(args) -> int:
    refused, promoted = 0, []
    for name in args.models or local.models(args.product):
        before = served_version(local.model_dir_of(args.repository, args.product, name))
        try:
            print(local.approve(args.repository, args.product, name, args.version))
        except local.PromotionRefused as error:
            print(f"refused: {error}", file=sys.stderr)
            refused += 1
        if served_version(args.repository / name) != before:
            promoted.append(name)
    if args.url:
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        from local_server.server import model_control_headers

        client = httpclient.InferenceServerClient(args.url)
        for name in promoted:  # explicit model control: loading again reads the new version_policy
            try:  # a server off loopback asks for its key ($TRITON_MODEL_CONTROL_KEY)
                client.load_model(name, headers=model_control_headers())
                print(f"{args.url}: reloaded {name}")
            except InferenceServerException as error:
                print(f"error: {args.url} could not reload {name}: {error.message()}", file=sys.stderr)
                return 1
    return 3 if refused else 0


def _tune(args) -> int:
    space = tuning.SearchSpace(epochs=(max(1, args.max_epochs // 4), args.max_epochs))
    result = tuning.tune(args.product, args.dataset, args.repository, args.out, args.trials, args.seed, space,
                         args.validation_fraction)
    states = [trial["state"] for trial in result["trials"]]
    print(f"best validation F1 {result['validation_f1']:.4f} (trial {result['best_trial']}; "
          f"{states.count('complete')} complete, {states.count('pruned')} pruned) -> {args.out}")
    print(f"  train with it: python -m defect_classifier train --params {args.out} ...")
    return 0


def _add_registry_arguments(commands, approve, status) -> None:
    """``register`` and ``reject``, and the registry flags of ``approve`` and ``status``."""
    push = commands.add_parser("register", help="push a registered local version to the SageMaker Model Registry "
                                                "(pending approval)")
    push.add_argument("--repository", type=Path, required=True)
    push.add_argument("--version", type=int, required=True)
    push.add_argument("--bucket", required=True, help="S3 bucket for the archive and the evaluation report")
    push.add_argument("--prefix", default="model-registry", help="S3 key prefix of the package's files")
    push.add_argument("--triton-version", default=DEFAULT_TRITON_VERSION)
    push.add_argument("--instance-type", default=DEFAULT_INSTANCE)
    push.add_argument("--allow-cpu-target", action="store_true", help="a --target cpu build (the local emulator)")
    push.add_argument("--workdir", type=Path, default=Path("build/registry"))
    reject_parser = commands.add_parser("reject", help="reject a model package (a version not served locally)")
    reject_parser.add_argument("--repository", type=Path, required=True)
    for parser in (approve, reject_parser):
        parser.add_argument("--package", required=parser is reject_parser, help="model package ARN (the registry)")
        parser.add_argument("--description", default="", help="why: recorded with the approval status")
    status.add_argument("--registry", action="store_true", help="the SageMaker Model Registry's packages")
    for parser in (push, reject_parser, approve, status):
        parser.add_argument("--region", help="AWS region (default: boto3's)")


def _is_registry_command(args) -> bool:
    """The command is one of the registry's (else the local folders')."""
    return args.command in ("register", "reject") or bool(getattr(args, "package", None) or
                                                          getattr(args, "registry", False))


def _run_registry_command(args) -> int:
    """0 done, 2 an error (one line), 3 the local F1 rule refused an approval (the package stays as it was)."""
    aws = Aws(args.region or None, say=lambda line: None)
    try:
        if args.command == "register":
            arn = model_registry.register(aws, args.repository, args.product, args.version, args.bucket,
                                          args.prefix, args.triton_version, args.instance_type, args.workdir,
                                          args.allow_cpu_target)
            print(f"registered version {args.version} as {arn} ({model_packages.describe(aws, arn).status})")
            print(f"  approve it: python -m defect_classifier approve --product {args.product.name} "
                  f"--repository {args.repository} "
                  f"--package {arn} --description WHY")
        elif args.command == "approve":
            lines = model_registry.approve(aws, args.repository, args.product, args.package, args.description)
            print("\n".join(lines))
            print(f"{args.package}: {APPROVED}")
        elif args.command == "reject":
            rejected = model_registry.reject(aws, args.repository, args.product, args.package, args.description)
            print(f"{args.package}: {rejected.status}")
        else:
            print("\n".join(model_registry.status_lines(aws, model_registry.pipeline_of(args.product))))
    except local.PromotionRefused as error:
        print(f"refused: {error}; the package stays {model_packages.describe(aws, args.package).status}",
              file=sys.stderr)
        return 3
    except (AwsError, model_packages.RegistryError, local.RegistryError, PackageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m defect_classifier", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train, evaluate and register a new version of both models")
    train.add_argument("--dataset", type=Path, required=True,
                       help="a Lookout-format dataset of the product (a defect_data.pipeline folder, or real photos)")
    train.add_argument("--test-dataset", type=Path, help="images training never sees (default: the dataset's own "
                                                         "test split, or a part held out)")
    train.add_argument("--repository", type=Path, action="append", required=True,
                       help="a built model repository to register in (repeat for cpu and gpu)")
    train.add_argument("--params", type=Path, help="training settings from a file (tune's best.json)")
    train.add_argument("--epochs", type=int, help=f"default: from --params, else {TrainSettings.epochs}")
    train.add_argument("--seed", type=int, help=f"default: from --params, else {TrainSettings.seed}")
    train.add_argument("--validation-fraction", type=float, default=0.2)
    tune = commands.add_parser("tune", help="search training settings on the train/validation split (Optuna)")
    tune.add_argument("--dataset", type=Path, required=True, help="a Lookout-format dataset of the product")
    tune.add_argument("--repository", type=Path, required=True, help="a built model repository (its defect_dali "
                                                                    "reads the images as served)")
    tune.add_argument("--trials", type=int, default=20, help="trial budget")
    tune.add_argument("--seed", type=int, default=0, help="sampler, split and training seed (train's --seed)")
    tune.add_argument("--max-epochs", type=int, default=40, help="epochs are searched from a quarter of this")
    tune.add_argument("--validation-fraction", type=float, default=0.2)
    tune.add_argument("--out", type=Path, default=Path("best.json"))
    approve = commands.add_parser("approve", help="serve a registered version if it beats the served one")
    approve.add_argument("--repository", type=Path, required=True)
    approve.add_argument("--version", type=int, help="the local version (or --package: the registry's)")
    approve.add_argument("--models", nargs="+", help="default: every trained model of the product")
    approve.add_argument("--url", help="a running server (HTTP host:port) to load the promoted version; "
                                       "its model-repository key, if any, from $TRITON_MODEL_CONTROL_KEY")
    status = commands.add_parser("status", help="registered versions, their F1, and which is served")
    status.add_argument("--repository", type=Path, help="the local versions (or --registry)")
    _add_registry_arguments(commands, approve, status)
    for command in commands.choices.values():
        command.add_argument("--product", help="the product (default: the one the repository serves)")
        command.add_argument("--products-store", type=Path, default=DEFAULT_STORE,
                             help="where --product is looked up when no --repository is given")
    args = parser.parse_args(argv)
    try:
        args.product = _product(args)
    except (ProductError, local.RegistryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if _is_registry_command(args):
        return _run_registry_command(args)
    if args.command in ("approve", "status") and None in (args.repository, getattr(args, "version", 0)):
        parser.error(f"{args.command} needs --repository{' and --version' if args.command == 'approve' else ''} "
                     "(the local folders), or the registry's flags")
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "approve":
            return _approve(args)
        if args.command == "tune":
            return _tune(args)
        print("\n".join(local.status(args.repository, args.product)))
        return 0
    except (data.DatasetError, local.RegistryError, tuning.ParamsError, tuning.TuningError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no version was half-registered", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
