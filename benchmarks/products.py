"""Products that are not the sample board, measured end to end with the README's own-product commands.

    python -m benchmarks.products [--out docs/benchmarks/DATE-products] [--lama-steps 600] [--epochs 30]

For each labelled product (scikit-image's real ``coins`` photograph, labelled here, and a
rendered control panel): define it, train its LaMa on its own photo (vs OpenCV Telea
inside held-out holes), make a training dataset and an unseen one (another seed) with
that LaMa, build its pipeline, train and evaluate its classifiers. For a Lookout for
Vision dataset of real photos (crops of scikit-image's ``brick``) whose anomalies are
line defects: define it, train on one part of the photo, test on crops of another part.
Writes ``products.json`` (every figure), ``products.md`` (the tables) and pictures of
the synthetic defects made for each product.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.timing import ROOT, machine_facts
from builders import defect_inspection
from builders.__main__ import main as build_main
from defect_classifier.__main__ import main as classifier_main
from defect_data.pipeline import main as dataset_main
from defect_data.train_lama import main as train_lama_main
from model_versions.repository import version_numbers
from products import find
from products.__main__ import main as products_main

PRODUCTS = ("coins", "panel", "bricks")


def define(store: Path, name: str, *source: str) -> None:
    if products_main(["--store", str(store), "define", "--name", name, *source]) != 0:
        raise SystemExit(f"could not define {name}")


def lama_and_datasets(store: Path, name: str, root: Path, lama_steps: int, per_class: int, normals: int,
                      unseen_per_class: int, unseen_normals: int) -> tuple[Path, Path, dict]:
    """The own-product commands: the product's LaMa (reused when it exists, as ``make demo`` does), then a
    dataset and an unseen one (seed 1) with it; datasets resume where they stopped."""
    lama = store / name / "lama.pt"
    if not lama.exists():  # exit 1 when it loses to Telea: the figures say so
        train_lama_main(["--labels", find(name, store).labels, "--name", name, "--out", str(lama),
                         "--steps", str(lama_steps)])
    common = ["--product", name, "--products-store", str(store), "--lama-weights", str(lama)]
    train, unseen = root / name, root / f"{name}-unseen"
    for out, seed, classes, kinds in ((train, 0, per_class, normals), (unseen, 1, unseen_per_class, unseen_normals)):
        if dataset_main(["--out", str(out), "--seed", str(seed), "--per-class", str(classes),
                         "--normals-per-kind", str(kinds), *common]) != 0:
            raise SystemExit(f"could not make the dataset {out}")
    import torch

    return train, unseen, torch.load(lama, weights_only=False)["evaluation"]


def build_and_train(store: Path, repository: Path, name: str, dataset: Path, test: Path | None, epochs: int) -> dict:
    models = defect_inspection.models(find(name, store))
    if build_main(["--target", "cpu", "--out", str(repository), "--products-store", str(store), "--product", name,
                   "--models", *models]) != 0:
        raise SystemExit(f"could not build {name}")
    started = time.perf_counter()
    testing = ["--test-dataset", str(test)] if test else []
    if classifier_main(["train", "--product", name, "--dataset", str(dataset), *testing,
                        "--repository", str(repository), "--epochs", str(epochs)]) != 0:
        raise SystemExit(f"could not train {name}")
    seconds = round(time.perf_counter() - started, 1)
    reports = {}
    for model in models:
        version = version_numbers(repository / model)[-1]
        report = repository / model / str(version) / "evaluation.json"
        if report.is_file():
            reports[model.removeprefix(f"{name}_")] = json.loads(report.read_text())
    return {"train_command_seconds": seconds, "reports": reports}


def removals_picture(dataset: Path, out: Path, count: int = 6) -> Path:
    """A row of synthetic anomalies (test split) with what was removed written in the file names."""
    paths = sorted((dataset / "test" / "anomaly").glob("*.jpg"))[:count]
    tiles = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    gap = np.full((tiles[0].shape[0], 6, 3), 255, np.uint8)
    row = np.hstack([part for tile in tiles for part in (tile, gap)])
    Image.fromarray(row).save(out)
    return out


def summary(name: str, result: dict) -> list[str]:
    parent = result["reports"]["parent"]["splits"]["test"]
    lines = [f"### {name}", "", f"Test set: {parent['count']} images the training never saw; anomaly F1 "
             f"{parent['per_label']['anomaly']['f1']:.3f}, normal F1 {parent['per_label']['normal']['f1']:.3f}, "
             f"ROC AUC {parent['roc_auc']:.3f}, average precision {parent['average_precision']:.3f}; threshold "
             f"{result['reports']['parent']['threshold']:.3f} (chosen on validation).", ""]
    child = result["reports"].get("child")
    if child:
        lines += ["| class | F1 | ROC AUC | support |", "| --- | --- | --- | --- |"]
        for label, entry in child["splits"]["test"]["per_label"].items():
            auc = "-" if entry["roc_auc"] is None else f"{entry['roc_auc']:.3f}"
            lines.append(f"| {label} | {entry['f1']:.3f} | {auc} | {entry['support']} |")
        lines.append("")
    lama = result.get("lama")
    if lama:
        lines += [f"LaMa trained on {name}'s photo ({lama['steps']} steps, {lama['train_seconds']} s) vs OpenCV "
                  f"Telea inside {lama['holes']} held-out holes: PSNR {lama['lama']['psnr']:.2f} vs "
                  f"{lama['telea']['psnr']:.2f} dB, SSIM {lama['lama']['ssim']:.3f} vs {lama['telea']['ssim']:.3f}.",
                  ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.products", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "products")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "products-benchmark")
    parser.add_argument("--lama-steps", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--products", nargs="+", choices=PRODUCTS, default=list(PRODUCTS))
    args = parser.parse_args(argv)
    from tests.product_samples import coins_labels, lookout_dataset, panel_labels

    args.out.mkdir(parents=True, exist_ok=True)
    store, repository = args.work / "products", args.work / "cpu"
    started = time.perf_counter()
    results = {**machine_facts(), "lama_steps": args.lama_steps, "epochs": args.epochs, "products": {}}
    for name, labels in (("coins", coins_labels), ("panel", panel_labels)):
        if name not in args.products:
            continue
        define(store, name, "--labels", str(labels(args.work / f"{name}-labels")))
        train, unseen, lama = lama_and_datasets(store, name, args.work / "datasets", args.lama_steps, 20, 10, 10, 5)
        results["products"][name] = {"lama": lama, **build_and_train(store, repository, name, train, unseen,
                                                                     args.epochs)}
        removals_picture(unseen, args.out / f"{name}-removals.jpg")
    if "bricks" in args.products:
        bricks = lookout_dataset(args.work / "bricks-data", split=True, normals=40, anomalies=30)
        define(store, "bricks", "--lookout", str(bricks))
        results["products"]["bricks"] = build_and_train(store, repository, "bricks", bricks, None, args.epochs)
    results["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "products.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"# Products other than the board, {results['date'][:10]}", "",
             f"{results['machine']}, {results['cpus']} CPUs; {args.epochs} epochs; run {results['seconds']} s.", ""]
    for name, result in results["products"].items():
        lines += summary(name, result)
    (args.out / "products.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
