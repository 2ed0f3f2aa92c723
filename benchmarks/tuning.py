"""What tuning buys: the default training settings against the tuned ones, side by side.

    python -m benchmarks.tuning [--dataset build/dataset] [--test-dataset build/dataset-unseen] \\
        [--trials 20] [--max-epochs 40] [--seed 0]

Runs ``python -m defect_classifier tune`` on the training dataset (its train/validation
split only), then trains both models twice, with ``TrainSettings()`` and with the best
parameters, each evaluated on the validation split and on the unseen test dataset as
``train`` reports it. Everything is registered in a scratch repository (defect_dali and
the two classifiers, built here), never in build/. Results go to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.timing import ROOT, SAMPLE_PRODUCT, machine_facts
from builders import defect_inspection
from builders.declaration import BuildOptions
from builders.repository import build_repository
from defect_classifier import pipeline, tuning
from products import Product, find
from defect_classifier.training import TrainSettings


def scores(product: Product, dataset: Path, test_dataset: Path, repository: Path, settings: TrainSettings) -> dict:
    """Validation and test F1 of both models trained with ``settings``, and the mean that tuning maximises."""
    started = time.perf_counter()
    result = pipeline.run(product, dataset, test_dataset, [repository], settings, say=lambda line: None)
    models = list(result.reports)
    f1 = {f"{model}/{split}": result.reports[model]["splits"][split]["f1"]
          for model in models for split in ("validation", "test")}
    for split in ("validation", "test"):
        f1[f"mean/{split}"] = sum(f1[f"{model}/{split}"] for model in models) / len(models)
    return {"settings": asdict(settings), "f1": f1, "seconds": round(time.perf_counter() - started, 1)}


def report(results: dict) -> None:
    table = Table(title=f"tuning: {results['tuning']['trials']} trials on {results['machine']}, "
                        f"{results['cpus']} CPUs, {results['date']}")
    for column in ("F1", "defaults", "tuned"):
        table.add_column(column)
    for key in results["defaults"]["f1"]:
        table.add_row(key, *(f"{results[side]['f1'][key]:.4f}" for side in ("defaults", "tuned")))
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tuning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=ROOT / "build" / "dataset")
    parser.add_argument("--test-dataset", type=Path, default=ROOT / "build" / "dataset-unseen")
    parser.add_argument("--product", default=str(SAMPLE_PRODUCT), help="the datasets' product (name or product.json)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    started = time.perf_counter()
    results = machine_facts()
    with tempfile.TemporaryDirectory(prefix="tuning-benchmark-") as scratch:
        repository = Path(scratch) / "cpu"
        product = find(args.product)
        build_repository(repository, BuildOptions(target="cpu", products=(product,),
                                                  models=tuple(defect_inspection.models(product))))
        best_json = args.out / f"tuning-best-{stamp}.json"
        space = tuning.SearchSpace(epochs=(max(1, args.max_epochs // 4), args.max_epochs))
        tuned = tuning.tune(product, args.dataset, repository, best_json, args.trials, args.seed, space)
        states = [trial["state"] for trial in tuned["trials"]]
        results["tuning"] = {"trials": len(states), "complete": states.count("complete"),
                             "pruned": states.count("pruned"), "best_trial": tuned["best_trial"],
                             "best_validation_f1": tuned["validation_f1"], "search_space": tuned["search_space"],
                             "seconds": tuned["seconds"], "best_json": str(best_json)}
        data = (product, args.dataset, args.test_dataset, repository)
        results["defaults"] = scores(*data, TrainSettings(seed=args.seed))
        results["tuned"] = scores(*data, tuning.load_params(best_json))
    results["dataset"], results["test_dataset"] = str(args.dataset), str(args.test_dataset)
    results["seconds"] = round(time.perf_counter() - started, 1)
    report(results)
    path = args.out / f"tuning-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {path} (run time {results['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
