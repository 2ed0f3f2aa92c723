"""Measure the segmenter: one ``defect_classifier`` training run per product, its exported ONNX scored.

    python -m benchmarks.segmentation --product pcb --product bricks [--out docs/benchmarks/<date>-segmentation]

``pcb``: the sample board's datasets as ``make demo`` makes them (``build/dataset``, seed 0,
and ``build/dataset-unseen``, seed 1, through the board's small LaMa). ``bricks``: the
Lookout dataset of real brick-wall photo crops with masks (``tests/product_samples``, as
``benchmarks/products.py`` builds it). Writes ``segmentation.json`` into ``--out`` and
prints a summary; ``segmentation.md`` is written by hand from it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from builders import defect_architecture as arch
from builders import defect_inspection, defect_segmenter
from builders.declaration import BuildOptions
from builders.repository import build_repository
from defect_classifier.evaluation import score_text
from defect_classifier.pipeline import run
from defect_classifier.training import TrainSettings
from products import find
from products.__main__ import main as products_main

ROOT = Path(__file__).resolve().parent.parent


def _cpu() -> str:
    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")]
    return names[0] if names else platform.processor()


def ms_per_image(model: Path, product, batch: int, repeats: int = 20) -> float:
    """Median ONNX Runtime (CPU) time per image of the exported segmenter at one batch size."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).uniform(-1, 1, (batch, 3, product.height, product.width)).astype(np.float32)
    times = []
    for _ in range(repeats + 3):
        started = time.perf_counter()
        session.run(None, {arch.IMAGE_NAME: images})
        times.append(time.perf_counter() - started)
    return round(1000 * float(np.median(times[3:])) / batch, 2)


def datasets(name: str, work: Path) -> tuple[object, Path, Path | None]:
    """(product, training dataset, test dataset or None for the dataset's own test split)."""
    if name == "pcb":
        return find("pcb", ROOT / "build" / "products"), ROOT / "build" / "dataset", ROOT / "build" / "dataset-unseen"
    from tests.product_samples import lookout_dataset

    bricks = lookout_dataset(work / "bricks-data", split=True, normals=40, anomalies=30)
    store = work / "products"
    if not (store / "bricks" / "product.json").is_file():
        products_main(["--store", str(store), "define", "--name", "bricks", "--lookout", str(bricks)])
    return find("bricks", store), bricks, None


def measure(name: str, work: Path, settings: TrainSettings) -> dict:
    product, dataset, test = datasets(name, work)
    repository = work / f"{name}-cpu"
    segmenter = defect_segmenter.name(product)
    build_repository(repository, BuildOptions(target="cpu", products=(product,),
                                              models=(*defect_inspection.models(product), segmenter)))
    result = run(product, dataset, test, [repository], settings)
    report = result.reports[segmenter]
    model = repository / segmenter / str(result.versions[str(repository)]) / "model.onnx"
    return {"product": product.name, "size": [product.height, product.width], "layout": product.layout,
            "classes": list(product.class_names), "counts": result.dataset["counts"],
            "training_seconds": {model_name: record["training_seconds"] for model_name, record in result.reports.items()},
            "ms_per_image": {f"batch {batch}": ms_per_image(model, product, batch) for batch in (1, 8)},
            "parameters": sum(p.numel() for p in arch.segmentation_network(len(product.classes) + 1,
                                                                            product.layout).parameters()),
            "splits": report["splits"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--product", action="append", choices=("pcb", "bricks"), required=True)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "segmentation-benchmark")
    parser.add_argument("--epochs", type=int, default=TrainSettings().epochs)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "segmentation")
    args = parser.parse_args()
    settings = TrainSettings(epochs=args.epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "segmentation.json"
    results = json.loads(out.read_text()) if out.is_file() else {"products": {}}
    results.update({"date": datetime.now(timezone.utc).date().isoformat(),
                    "machine": f"{_cpu()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start",
                    "settings": asdict(settings)})
    for name in args.product:
        results["products"][name] = measure(name, args.work, settings)
        test = results["products"][name]["splits"]["test"]
        print(f"{name}: test mean IoU {score_text(test['mean_iou'])} (with background "
              f"{score_text(test['mean_iou_with_background'])}), pixel F1 {test['f1']:.3f}; " +
              ", ".join(f"{label} IoU {score_text(entry['iou'])} F1 {score_text(entry['f1'])}"
                        for label, entry in test["per_label"].items()), flush=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
