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

from builders.repository import served_version
from defect_classifier import data, registry, sagemaker_registry, tuning
from defect_classifier.evaluation import score_text
from defect_classifier.training import TrainSettings
from products import DEFAULT_STORE, ProductError, find, in_repository


def _product(args):
    """The product asked for: from the repository that serves it, else from the store."""
    repository = getattr(args, "repository", None)
    if isinstance(repository, list):
        repository = repository[0]
    if args.product is None:
        served = in_repository(repository) if repository else []
        if len(served) != 1:
            names = ", ".join(p.name for p in served) or "none"
            raise registry.RegistryError(f"name the product with --product (products in {repository}: {names})")
        return served[0]
    return registry.product_of(repository, args.product) if repository else find(args.product, args.products_store)


def _train(args) -> int:
    from defect_classifier.pipeline import run

    explicit = {name: getattr(args, name) for name in ("epochs", "seed") if getattr(args, name) is not None}
    settings = replace(tuning.load_params(args.params) if args.params else TrainSettings(), **explicit)
    result = run(args.product, args.dataset, args.test_dataset, args.repository, settings, args.validation_fraction)
    for name, record in result.reports.items():
        splits = record["splits"]
        print(f"{name}: validation F1 {splits['validation']['f1']:.4f}, test F1 {splits['test']['f1']:.4f}"
              f"{registry.mean_iou_text(splits)}")
        for label, entry in splits["test"]["per_label"].items():
            print(f"    test {label:11s} precision {entry['precision']:.3f} recall {entry['recall']:.3f} "
                  f"F1 {score_text(entry['f1'])} ({entry['support']})")
    for repository, version in result.versions.items():
        print(f"registered version {version} of {', '.join(registry.models(args.product))} in {repository} "
              f"(reports: {repository}/{{model}}/{version}/evaluation.md, confusion_matrix.png)")
        print(f"  serve it: python -m defect_classifier approve --product {args.product.name} "
              f"--repository {repository} --version {version}")
    return 0


def _approve(args) -> int:
    refused, promoted = 0, []
    for name in args.models or registry.models(args.product):
        before = served_version(registry.model_dir_of(args.repository, args.product, name))
        try:
            print(registry.approve(args.repository, args.product, name, args.version))
        except registry.PromotionRefused as error:
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
    sagemaker_registry.add_arguments(commands, approve, status)
    for command in commands.choices.values():
        command.add_argument("--product", help="the product (default: the one the repository serves)")
        command.add_argument("--products-store", type=Path, default=DEFAULT_STORE,
                             help="where --product is looked up when no --repository is given")
    args = parser.parse_args(argv)
    try:
        args.product = _product(args)
    except (ProductError, registry.RegistryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if sagemaker_registry.wanted(args):
        return sagemaker_registry.run_command(args)
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
        print("\n".join(registry.status(args.repository, args.product)))
        return 0
    except (data.DatasetError, registry.RegistryError, tuning.ParamsError, tuning.TuningError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no version was half-registered", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
