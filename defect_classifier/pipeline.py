"""One training run: manifests -> QA -> split -> train both models -> ONNX -> evaluate -> register.

The training data are the train and test manifests of one ``defect_data.pipeline``
dataset, split here into train and validation; the test set is a second dataset
generated with another seed, which training never sees. Nothing is registered until
both models are exported and evaluated, so a run stopped early leaves the repositories
as they were.
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
from builders import defect_child, defect_dali, defect_parent
from builders.in_process import DaliPreprocessor
from defect_classifier import data, evaluation, registry, training

MANIFESTS = ("train.manifest", "test.manifest")


@dataclass
class RunResult:
    versions: dict[str, int]  # repository -> registered version number
    reports: dict[str, dict]  # model -> evaluation record
    rejected: list[data.Rejected]
    dataset: dict


def _checked(dataset: Path, seen: set[str]) -> tuple[list[data.Example], list[data.Rejected]]:
    lines = [line for name in MANIFESTS for line in data.read_manifest(Path(dataset) / name)]
    return data.quality_check(lines, seen)


def prepare(dataset: Path, test_dataset: Path, validation_fraction: float, seed: int):
    """QA both datasets, check they can train and test every class, split; raises DatasetError."""
    training_seed, test_seed = (data.dataset_seed(Path(d) / MANIFESTS[0]) for d in (dataset, test_dataset))
    if training_seed is not None and training_seed == test_seed:
        raise data.DatasetError(f"the test dataset {test_dataset} was generated with the training dataset's seed "
                                f"{test_seed}; generate it with another --seed so that its images are unseen")
    seen: set[str] = set()
    pool, rejected = _checked(dataset, seen)
    test, rejected_test = _checked(test_dataset, seen)
    data.require_every_class(pool, f"the training dataset {dataset}")
    data.require_every_class(test, f"the test dataset {test_dataset}")
    parts = {**data.split(pool, validation_fraction, seed), "test": test}
    data.require_every_class(parts["train"], "the training split")
    return parts, rejected + rejected_test


def read_images(repository: Path, examples: list[data.Example], progress: Progress) -> np.ndarray:
    """[N, 3, 240, 320] through the repository's own ``defect_dali`` pipeline, as served."""
    preprocess = DaliPreprocessor(repository, model=defect_dali.NAME)
    task = progress.add_task("reading images through defect_dali", total=len(examples))
    batches = []
    for start in range(0, len(examples), preprocess.max_batch_size):
        chunk = examples[start:start + preprocess.max_batch_size]
        batches.append(preprocess([Path(e.path).read_bytes() for e in chunk]))
        progress.advance(task, len(chunk))
    return np.concatenate(batches) if batches else np.zeros((0, *arch.IMAGE.dims), np.float32)


def onnx_scores(session, images: np.ndarray, output: str, batch_size: int = 32) -> np.ndarray:
    """One output of an exported model over all images, in batches."""
    return np.concatenate([session.run([output], {arch.IMAGE.name: images[i:i + batch_size]})[0]
                           for i in range(0, len(images), batch_size)])


def _train_and_export(parts, images, settings: training.TrainSettings, staging: Path, progress: Progress):
    anomaly = {name: np.array([e.anomaly for e in part]) for name, part in parts.items()}
    child_rows = anomaly["train"]
    per_epoch = training.steps_per_epoch(len(images["train"]), settings) + \
        training.steps_per_epoch(int(child_rows.sum()), settings)
    task = progress.add_task("training defect_parent, then defect_child", total=settings.epochs * per_epoch)

    def step():
        progress.advance(task)

    parent_cnn = training.fit(1, images["train"], anomaly["train"][:, None], settings, step)
    parent = training.calibrate_parent(parent_cnn, images["train"], anomaly["train"], images["validation"])
    child_cnn = training.fit(len(arch.CLASSES), images["train"][child_rows],
                             data.missing_matrix([e for e in parts["train"] if e.anomaly]), settings, step)
    paths = {}
    for name, module, outputs in ((defect_parent.NAME, parent, defect_parent.OUTPUTS),
                                  (defect_child.NAME, defect_child.module(child_cnn), defect_child.OUTPUTS)):
        (staging / name).mkdir(parents=True)
        paths[name] = arch.export_onnx(module, staging / name / "model.onnx", [t.name for t in outputs])
    return paths, anomaly


def _evaluate(paths, parts, images, anomaly, details, staging: Path) -> dict[str, dict]:
    import onnxruntime as ort

    sessions = {name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) for name, path in paths.items()}
    reports = {defect_parent.NAME: {}, defect_child.NAME: {}}
    for split in ("validation", "test"):
        scores = onnx_scores(sessions[defect_parent.NAME], images[split], defect_parent.ANOMALY_SCORE.name)
        reports[defect_parent.NAME][split] = evaluation.parent_report(anomaly[split], scores)
        rows = anomaly[split]
        missing = onnx_scores(sessions[defect_child.NAME], images[split][rows], defect_child.MISSING_SCORES.name)
        reports[defect_child.NAME][split] = evaluation.child_report(
            data.missing_matrix([e for e in parts[split] if e.anomaly]), missing)
    return {name: evaluation.write_report(staging / name, name, splits, details) for name, splits in reports.items()}


def run(dataset: Path, test_dataset: Path, repositories: list[Path], settings: training.TrainSettings,
        validation_fraction: float = 0.2, say=print) -> RunResult:
    for repository in repositories:  # fail before the work, not after it
        for name in registry.MODELS:
            registry.model_dir_of(repository, name)
    parts, rejected = prepare(dataset, test_dataset, validation_fraction, settings.seed)
    for entry in rejected:
        say(f"  dropped {entry.source}: {entry.reason}")
    manifest = data.dataset_manifest(parts, rejected, {"train": str(dataset), "test": str(test_dataset)})
    say(f"dataset version {manifest['version']}: {json.dumps(manifest['counts'])}; {len(rejected)} entries dropped")
    staging = Path(tempfile.mkdtemp(prefix=".defect-run-", dir=Path(repositories[0]).parent))
    try:
        with Progress() as progress:
            images = {name: read_images(repositories[0], part, progress) for name, part in parts.items()}
            started = time.perf_counter()
            paths, anomaly = _train_and_export(parts, images, settings, staging, progress)
        details = {"dataset_version": manifest["version"], "training": asdict(settings),
                   "training_seconds": round(time.perf_counter() - started, 1), "threshold": evaluation.THRESHOLD}
        reports = _evaluate(paths, parts, images, anomaly, details, staging)
        for name in paths:
            (staging / name / "dataset.json").write_text(json.dumps(manifest, indent=1) + "\n")
        versions = {str(repository): registry.register(repository, {name: staging / name for name in paths})
                    for repository in repositories}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RunResult(versions, reports, rejected, manifest)
