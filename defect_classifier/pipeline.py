"""One training run of a product: datasets -> rules -> split -> train its models -> ONNX -> evaluate -> register.

The training data are a Lookout-format dataset of the product (real photos, synthetic
removals from ``defect_data.pipeline``, or both mixed in one folder's manifests), split
here into train and validation. The test set is a second dataset (generated with another
seed, or photos kept apart), or the dataset's own test split, or a stratified part held
out here; training never sees it. Thresholds are chosen on validation and folded into
the exported models. A product with classes trains three models: the parent, the child
and the segmenter (from the masks). Nothing is registered until every model is exported
and evaluated, so a run stopped early leaves the repositories as they were.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.progress import Progress

from builders import defect_architecture as arch
from builders import defect_child, defect_dali, defect_parent, defect_segmenter
from builders.in_process import DaliPreprocessor
from defect_classifier import data, evaluation, segmentation, training
from defect_data import lookout
from model_versions import local
from products import Product

TEST_FRACTION = 0.3  # of a dataset without a test split and without a separate test dataset


@dataclass
class RunResult:
    versions: dict[str, int]  # repository -> registered version number
    reports: dict[str, dict]  # model -> evaluation record
    rejected: list[data.Rejected]
    dataset: dict


def test_part(pool: list[data.Example], fraction: float, seed: int):
    """The dataset's own test split, or a stratified part held out from it."""
    if any(example.split == "test" for example in pool):
        return [e for e in pool if e.split != "test"], [e for e in pool if e.split == "test"]
    return data.split(pool, fraction, seed)


def prepare(product: Product, dataset: Path, test_dataset: Path | None, validation_fraction: float, seed: int,
            reader: lookout.Reader):
    """Rules, duplicates, the split into train / validation / test; raises DatasetError before any training."""
    if test_dataset is not None:
        training_seed, test_seed = data.dataset_seed(dataset), data.dataset_seed(test_dataset)
        if training_seed is not None and training_seed == test_seed:
            raise data.DatasetError(f"the test dataset {test_dataset} was generated with the training dataset's "
                                    f"seed {test_seed}; generate it with another --seed so that its images are unseen")
    seen: set[str] = set()
    pool, rejected = data.drop_duplicates(data.read(dataset, product, reader), seen)
    if test_dataset is None:
        pool, test = test_part(pool, TEST_FRACTION, seed)
    else:
        test, rejected_test = data.drop_duplicates(data.read(test_dataset, product, reader), seen)
        rejected += rejected_test
    data.require_minimums(pool, data.MIN_POOL, f"the training data of {dataset}")
    data.require_minimums(test, data.MIN_TEST, f"the test data of {test_dataset or dataset}")
    data.require_every_class(pool, product, f"the training dataset {dataset}")
    data.require_every_class(test, product, f"the test dataset {test_dataset or dataset}")
    train, validation = data.split(pool, validation_fraction, seed)
    data.require_every_class(train, product, "the training split")
    return {"train": train, "validation": validation, "test": test}, rejected


def read_images(repository: Path, product: Product, examples: list[data.Example], reader: lookout.Reader,
                progress: Progress) -> np.ndarray:
    """[N, 3, H, W] through the repository's own ``<product>_dali`` pipeline, as served."""
    preprocess = DaliPreprocessor(repository, model=defect_dali.name(product))
    task = progress.add_task(f"reading images through {defect_dali.name(product)}", total=len(examples))
    batches = []
    for start in range(0, len(examples), preprocess.max_batch_size):
        chunk = examples[start:start + preprocess.max_batch_size]
        batches.append(preprocess([reader.read_bytes(e.path) for e in chunk]))
        progress.advance(task, len(chunk))
    return np.concatenate(batches) if batches else np.zeros((0, *arch.image_tensor(product).dims), np.float32)


def onnx_scores(session, images: np.ndarray, output: str, batch_size: int = 32) -> np.ndarray:
    """One output of an exported model over all images, in batches."""
    return np.concatenate([session.run([output], {arch.IMAGE_NAME: images[i:i + batch_size]})[0]
                           for i in range(0, len(images), batch_size)])


def _child_rows(part: list[data.Example]) -> np.ndarray:
    """The anomalies whose classes are known (they have a mask): what the child is scored on."""
    return np.array([e.anomaly and e.mask is not None for e in part], bool)


def _child_training_rows(product: Product, part: list[data.Example]) -> np.ndarray:
    if not product.classes:
        return np.zeros(len(part), bool)
    return training.child_training_rows(np.array([e.anomaly for e in part], bool), _child_rows(part), product.layout)


def _train_child(product: Product, parts, images, settings: training.TrainSettings, rows, step):
    """The child, and its per-class thresholds chosen on validation."""
    child_cnn = training.fit(len(product.classes), images["train"][rows],
                             data.class_matrix([e for e, row in zip(parts["train"], rows) if row], product),
                             settings, step, layout=product.layout)
    validation = _child_rows(parts["validation"])
    truth = data.class_matrix([e for e, row in zip(parts["validation"], validation) if row], product)
    found = training.probabilities(child_cnn, images["validation"][validation])
    per_class = [evaluation.choose_threshold(truth[:, i], found[:, i]) for i in range(len(product.classes))]
    return defect_child.module(product, child_cnn, np.array(per_class)), dict(zip(product.class_names, per_class))


def _train_parent(product: Product, images, anomaly, settings: training.TrainSettings, step):
    """The calibrated parent, and its threshold chosen on validation."""
    cnn = training.fit(1, images["train"], anomaly["train"][:, None], settings, step, simulate=True,
                       layout=product.layout)
    threshold = evaluation.choose_threshold(anomaly["validation"], training.probabilities(cnn, images["validation"]))
    return training.calibrate_parent(cnn, images["train"], anomaly["train"], images["validation"], threshold), threshold


def _train_segmenter(product: Product, images, masks, settings: training.TrainSettings, rows, step):
    """The segmenter as served (no threshold: the class of the highest logit per pixel)."""
    network = segmentation.fit(images["train"][rows], masks["train"][0][rows], product, settings, step)
    return defect_segmenter.module(product, network), None


def _timed(train):
    """(what ``train()`` returns, the seconds it took)."""
    started = time.perf_counter()
    return train(), round(time.perf_counter() - started, 1)


def _train_and_export(product: Product, parts, images, masks, settings: training.TrainSettings, staging: Path,
                      progress: Progress):
    anomaly = {name: np.array([e.anomaly for e in part]) for name, part in parts.items()}
    child_rows = _child_training_rows(product, parts["train"])
    segment_rows = masks["train"][1] if product.classes else np.zeros(len(parts["train"]), bool)
    per_epoch = sum(training.steps_per_epoch(count, settings)
                    for count in (len(images["train"]), int(child_rows.sum()), int(segment_rows.sum())))
    task = progress.add_task(f"training {', '.join(local.models(product))}", total=settings.epochs * per_epoch)

    def step():
        progress.advance(task)

    trained = {defect_parent.name(product): (lambda: _train_parent(product, images, anomaly, settings, step),
                                             defect_parent.OUTPUTS)}
    if product.classes:
        trained[defect_child.name(product)] = (
            lambda: _train_child(product, parts, images, settings, child_rows, step), [defect_child.scores(product)])
        trained[defect_segmenter.name(product)] = (
            lambda: _train_segmenter(product, images, masks, settings, segment_rows, step),
            [defect_segmenter.pixel_classes(product)])
    paths, details = {}, {}
    for name, (train, outputs) in trained.items():
        (module, threshold), seconds = _timed(train)
        (staging / name).mkdir(parents=True)
        paths[name] = arch.export_onnx(module, staging / name / "model.onnx", arch.image_tensor(product),
                                       [t.name for t in outputs])
        details[name] = {"threshold": threshold, "training_seconds": seconds}
    return paths, anomaly, details


def _segmenter_report(session, product: Product, images: np.ndarray, masks) -> dict:
    """Pixel scores of the exported segmenter on the images whose masks are known."""
    truth, known = masks
    found = onnx_scores(session, images[known], defect_segmenter.PIXEL_CLASSES_NAME) if known.any() \
        else np.zeros((0, product.height, product.width), np.uint8)
    return segmentation.report(truth[known], found, product)


def _evaluate(product: Product, paths, parts, images, masks, anomaly, details, staging: Path) -> dict[str, dict]:
    import onnxruntime as ort

    sessions = {name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) for name, path in paths.items()}
    parent_name, child_name = defect_parent.name(product), defect_child.name(product)
    segmenter_name = defect_segmenter.name(product)
    reports = {name: {} for name in paths}
    for split in ("validation", "test"):
        scores = onnx_scores(sessions[parent_name], images[split], defect_parent.ANOMALY_SCORE.name)
        reports[parent_name][split] = evaluation.parent_report(anomaly[split], scores)
        if child_name in sessions:
            rows = _child_rows(parts[split])
            found = onnx_scores(sessions[child_name], images[split][rows], defect_child.SCORES_NAME) if rows.any() \
                else np.zeros((0, len(product.classes)), np.float32)
            reports[child_name][split] = evaluation.child_report(
                data.class_matrix([e for e, row in zip(parts[split], rows) if row], product), found,
                product.class_names)
        if segmenter_name in sessions:
            reports[segmenter_name][split] = _segmenter_report(sessions[segmenter_name], product, images[split],
                                                               masks[split])
    return {name: evaluation.write_report(staging / name, name, splits, {**details["run"], **details[name]})
            for name, splits in reports.items()}


def run(product: Product, dataset: Path, test_dataset: Path | None, repositories: list[Path],
        settings: training.TrainSettings, validation_fraction: float = 0.2, say=print,
        reader: lookout.Reader | None = None) -> RunResult:
    reader = reader or lookout.Reader()
    for repository in repositories:  # fail before the work, not after it
        local.check_repository(repository, product)
    parts, rejected = prepare(product, dataset, test_dataset, validation_fraction, settings.seed, reader)
    for entry in rejected:
        say(f"  dropped {entry.source}: {entry.reason}")
    manifest = data.dataset_manifest(parts, rejected, {"train": str(dataset), "test": str(test_dataset or dataset)})
    say(f"{product.name}: dataset version {manifest['version']}: {json.dumps(manifest['counts'])}; "
        f"{len(rejected)} entries dropped")
    staging = Path(tempfile.mkdtemp(prefix=".defect-run-", dir=Path(repositories[0]).parent))
    try:
        with Progress() as progress:
            images = {name: read_images(repositories[0], product, part, reader, progress)
                      for name, part in parts.items()}
            masks = {name: segmentation.read_masks(part, product, reader) for name, part in parts.items()} \
                if product.classes else {}
            paths, anomaly, details = _train_and_export(product, parts, images, masks, settings, staging, progress)
        details["run"] = {"product": product.name, "dataset_version": manifest["version"],
                          "training": asdict(settings)}
        reports = _evaluate(product, paths, parts, images, masks, anomaly, details, staging)
        for name in paths:
            (staging / name / "dataset.json").write_text(json.dumps(manifest, indent=1) + "\n")
        versions = {str(repository): local.register(repository, product, {name: staging / name for name in paths})
                    for repository in repositories}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RunResult(versions, reports, rejected, manifest)
