"""``python -m defect_classifier``: train, evaluate and register the defect models; approve; status.

    python -m defect_classifier train --dataset build/dataset --test-dataset build/dataset-unseen \\
        --repository build/cpu [--repository build/gpu] [--epochs 30]
    python -m defect_classifier approve --repository build/cpu --version 2 [--url 127.0.0.1:8000]
    python -m defect_classifier status --repository build/cpu

``train`` registers both models as the next version (not served yet); ``approve``
serves a version only if its validation F1 beats the served one's, and with ``--url``
asks a running server (explicit model control) to load it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from builders.repository import served_version
from defect_classifier import data, registry
from defect_classifier.training import TrainSettings


def _train(args) -> int:
    from defect_classifier.pipeline import run

    settings = TrainSettings(epochs=args.epochs, seed=args.seed)
    result = run(args.dataset, args.test_dataset, args.repository, settings, args.validation_fraction)
    for name, record in result.reports.items():
        splits = record["splits"]
        print(f"{name}: validation F1 {splits['validation']['f1']:.4f}, test F1 {splits['test']['f1']:.4f}")
        for label, entry in splits["test"]["per_label"].items():
            print(f"    test {label:11s} precision {entry['precision']:.3f} recall {entry['recall']:.3f} "
                  f"F1 {entry['f1']:.3f} ({entry['support']})")
    for repository, version in result.versions.items():
        print(f"registered version {version} of {', '.join(registry.MODELS)} in {repository} "
              f"(reports: {repository}/{{model}}/{version}/evaluation.md, confusion_matrix.png)")
        print(f"  serve it: python -m defect_classifier approve --repository {repository} --version {version}")
    return 0


def _approve(args) -> int:
    refused, promoted = 0, []
    for name in args.models:
        before = served_version(registry.model_dir_of(args.repository, name))
        try:
            print(registry.approve(args.repository, name, args.version))
        except registry.PromotionRefused as error:
            print(f"refused: {error}", file=sys.stderr)
            refused += 1
        if served_version(args.repository / name) != before:
            promoted.append(name)
    if args.url:
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        client = httpclient.InferenceServerClient(args.url)
        for name in promoted:  # explicit model control: loading again reads the new version_policy
            try:
                client.load_model(name)
                print(f"{args.url}: reloaded {name}")
            except InferenceServerException as error:
                print(f"error: {args.url} could not reload {name}: {error.message()}", file=sys.stderr)
                return 1
    return 3 if refused else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m defect_classifier", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train, evaluate and register a new version of both models")
    train.add_argument("--dataset", type=Path, required=True, help="a defect_data.pipeline output folder")
    train.add_argument("--test-dataset", type=Path, required=True, help="the same, generated with another --seed")
    train.add_argument("--repository", type=Path, action="append", required=True,
                       help="a built model repository to register in (repeat for cpu and gpu)")
    train.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--validation-fraction", type=float, default=0.2)
    approve = commands.add_parser("approve", help="serve a registered version if it beats the served one")
    approve.add_argument("--repository", type=Path, required=True)
    approve.add_argument("--version", type=int, required=True)
    approve.add_argument("--models", nargs="+", default=list(registry.MODELS), choices=list(registry.MODELS))
    approve.add_argument("--url", help="a running server (HTTP host:port) to load the promoted version")
    status = commands.add_parser("status", help="registered versions, their F1, and which is served")
    status.add_argument("--repository", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "approve":
            return _approve(args)
        print("\n".join(registry.status(args.repository)))
        return 0
    except (data.DatasetError, registry.RegistryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no version was half-registered", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
