"""Hyperparameter search for the two defect CNNs with Optuna, on the training/validation split only.

Each trial trains ``defect_parent`` then ``defect_child`` with settings drawn by a seeded
TPE sampler and scores them on the validation split as ``approve`` does (macro F1 at the
served threshold; the objective is the mean of the two models' F1). The unseen test
dataset is never read, so it cannot leak into the choice.

Searched: learning rate, weight decay, epochs, and one augmentation strength that scales
the default shift, turn, brightness and contrast together. The width of the CNN is fixed:
``defect_architecture.network`` has no width parameter, and the served ONNX files and
the untrained version 1 are built from it. (Optuna is imported where it is used, so that the
other commands start without it.)

Bad trials stop early: every model reports its validation F1 at each quarter of its
epochs (steps 1-4 the parent, 5-8 the child). Quarters rather than epochs, because the
one-cycle schedule makes epoch 5 of 10 and epoch 5 of 40 different points of training;
a median pruner compares trials at the same quarter.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.progress import Progress

from defect_classifier import data, evaluation, pipeline, training
from defect_classifier.training import TrainSettings
from defect_data import lookout
from products import Product

if TYPE_CHECKING:
    import optuna

QUARTERS = 4  # validation reports per model and trial
AUGMENTATION = ("shift", "turn_degrees", "brightness", "contrast")  # scaled together by "augmentation"
# What a params file may hold: each TrainSettings field and its allowed range (inclusive).
LIMITS = {"epochs": (1, 10_000), "batch_size": (2, 4096), "learning_rate": (1e-7, 1.0), "weight_decay": (0.0, 1.0),
          "seed": (0, 2**32 - 1), "shift": (0.0, 0.5), "turn_degrees": (0.0, 180.0), "brightness": (0.0, 1.0),
          "contrast": (0.0, 1.0), "simulated": (0.0, 4.0)}


class ParamsError(ValueError):
    """A params file that cannot become TrainSettings; the message names the keys."""


class TuningError(RuntimeError):
    """The search found nothing to recommend."""


@dataclass(frozen=True)
class SearchSpace:
    learning_rate: tuple[float, float] = (3e-4, 3e-2)  # log scale
    weight_decay: tuple[float, float] = (1e-5, 1e-2)  # log scale
    epochs: tuple[int, int] = (10, 40)
    augmentation: tuple[float, float] = (0.5, 2.0)  # times the default strengths

    def settings(self, trial: optuna.Trial, base: TrainSettings) -> TrainSettings:
        strength = trial.suggest_float("augmentation", *self.augmentation)
        return replace(base, learning_rate=trial.suggest_float("learning_rate", *self.learning_rate, log=True),
                       weight_decay=trial.suggest_float("weight_decay", *self.weight_decay, log=True),
                       epochs=trial.suggest_int("epochs", *self.epochs),
                       **{name: getattr(base, name) * strength for name in AUGMENTATION})


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # [N, 3, H, W] as the product's DALI model makes them
    anomaly: np.ndarray  # [N] bool
    classes: np.ndarray  # [N, classes] 0/1 (all 0 for normals)
    class_names: tuple[str, ...]
    masked: np.ndarray  # [N] bool: anomalies whose classes are known (a mask)
    layout: str  # the product's, for the CNNs' head

    @classmethod
    def of(cls, examples: list[data.Example], images: np.ndarray, product: Product) -> "Split":
        return cls(images, np.array([e.anomaly for e in examples], bool), data.class_matrix(examples, product),
                   product.class_names, np.array([e.anomaly and e.mask is not None for e in examples], bool),
                   product.layout)

    @property
    def anomalies(self) -> np.ndarray:
        return self.images[self.masked]

    @property
    def child_training(self) -> np.ndarray:
        """[N] bool: the rows the child learns from (``training.child_training_rows``)."""
        return training.child_training_rows(self.anomaly, self.masked, self.layout)


def _parent_f1(net, validation: Split) -> float:
    return evaluation.parent_report(validation.anomaly, training.probabilities(net, validation.images))["f1"]


def _child_f1(net, validation: Split) -> float:
    found = training.probabilities(net, validation.anomalies)
    return evaluation.child_report(validation.classes[validation.masked], found, validation.class_names)["f1"]


def _quarter_reached(epoch: int, epochs: int) -> int | None:
    """The quarter of training that ends with this epoch (1..4), or None inside a quarter."""
    now, before = (epoch + 1) * QUARTERS // epochs, epoch * QUARTERS // epochs
    return now if now > before else None


def _reporter(trial: optuna.Trial, score, validation: Split, first_step: int, epochs: int, scores: list[float]):
    """``fit``'s on_epoch: report the validation F1 at each quarter, stop the trial if the pruner says so."""
    import optuna

    def on_epoch(epoch: int, net) -> None:
        quarter = _quarter_reached(epoch, epochs)
        if quarter is None:
            return
        scores.append(score(net, validation))
        trial.report(scores[-1], first_step + quarter - 1)
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation F1 {scores[-1]:.4f} at step {first_step + quarter - 1}")

    return on_epoch


def objective(train: Split, validation: Split, space: SearchSpace, base: TrainSettings, progress: Progress):
    """One trial: both models trained with the trial's settings; their mean validation F1 (the parent's
    alone for a product without classes)."""
    def run_trial(trial: optuna.Trial) -> float:
        settings = space.settings(trial, base)
        trial.set_user_attr("settings", asdict(settings))
        steps = settings.epochs * (training.steps_per_epoch(len(train.images), settings)
                                   + training.steps_per_epoch(int(train.child_training.sum()), settings))
        task = progress.add_task(f"trial {trial.number}", total=steps)
        try:
            parent_scores, child_scores = [], []
            training.fit(1, train.images, train.anomaly[:, None], settings,
                         lambda: progress.advance(task),
                         _reporter(trial, _parent_f1, validation, 1, settings.epochs, parent_scores), simulate=True,
                         layout=train.layout)
            if train.class_names:
                training.fit(len(train.class_names), train.images[train.child_training],
                             train.classes[train.child_training], settings,
                             lambda: progress.advance(task),
                             _reporter(trial, _child_f1, validation, 1 + QUARTERS, settings.epochs, child_scores),
                             layout=train.layout)
        finally:
            progress.remove_task(task)
        return float(np.mean([parent_scores[-1], *child_scores[-1:]]))

    return run_trial


def search(train: Split, validation: Split, trials: int, seed: int = 0, space: SearchSpace = SearchSpace(),
           base: TrainSettings | None = None, pruner: optuna.pruners.BasePruner | None = None,
           progress: Progress | None = None) -> optuna.Study:
    """An in-memory study of ``trials`` trials; the same data and seed give the same trials.

    Trial 0 is ``base`` itself when its epochs lie in the space (the defaults, with ``tune``),
    so the best validation F1 is at least that of the defaults (training is seeded)."""
    import optuna

    base = base or TrainSettings(seed=seed)
    # Three trials run whole first; after that a trial below the median of earlier ones at the same
    # step stops, from half of the parent's epochs on (step 1, its first quarter, is too early to judge).
    pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    if space.epochs[0] <= base.epochs <= space.epochs[1]:  # the defaults go first: the best is never worse
        study.enqueue_trial({"learning_rate": base.learning_rate, "weight_decay": base.weight_decay,
                             "epochs": base.epochs, "augmentation": 1.0})
    progress = progress or Progress(disable=True)
    overall = progress.add_task("tuning", total=trials)

    def finished(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        progress.advance(overall)
        score = "" if trial.value is None else f" validation F1 {trial.value:.4f};"
        best = study.best_value if any(t.state.name == "COMPLETE" for t in study.trials) else None
        progress.console.print(f"trial {trial.number} {trial.state.name.lower()}:{score} {json.dumps(trial.params)}"
                               + ("" if best is None else f"; best so far {best:.4f}"))

    study.optimize(objective(train, validation, space, base, progress), n_trials=trials, callbacks=[finished])
    return study


def _trial_record(trial: optuna.trial.FrozenTrial) -> dict:
    return {"number": trial.number, "state": trial.state.name.lower(), "params": trial.params,
            "validation_f1": trial.value, "reported": {str(step): f1 for step, f1 in trial.intermediate_values.items()},
            "seconds": round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1)
            if trial.datetime_complete else None}


def record(study: optuna.Study, details: dict) -> dict:
    """What best.json holds: the best trial's full TrainSettings as ``params``, and every trial."""
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        raise TuningError(f"none of the {len(study.trials)} trials completed (all pruned or failed); "
                                "allow more trials or epochs")
    best = study.best_trial
    return {**details, "objective": "mean of defect_parent and defect_child validation F1 (macro, threshold "
                                    f"{evaluation.THRESHOLD})",
            "reported_steps": f"1-{QUARTERS}: defect_parent, {QUARTERS + 1}-{2 * QUARTERS}: defect_child, "
                              "at each quarter of its epochs; a pruned trial's validation_f1 is its last report",
            "params": best.user_attrs["settings"], "validation_f1": best.value, "best_trial": best.number,
            "trials": [_trial_record(t) for t in study.trials]}


def training_splits(product: Product, dataset: Path, repository: Path, validation_fraction: float, seed: int,
                    progress: Progress) -> tuple[dict[str, Split], dict]:
    """The train/validation split ``train`` makes of this dataset with this seed, read through the product's DALI.

    As ``pipeline.prepare`` does for the training dataset: its own test split, or the part
    held out as test, is left out (a synthetic dataset is tested by another made with
    another seed, which is not read).
    """
    reader = lookout.Reader()
    pool, rejected = data.drop_duplicates(data.read(dataset, product, reader))
    if data.dataset_seed(dataset) is None:  # synthetic datasets are tested by one of another seed
        pool, _ = pipeline.test_part(pool, pipeline.TEST_FRACTION, seed)  # what train would test on
    data.require_every_class(pool, product, f"the training dataset {dataset}")
    train, validation = data.split(pool, validation_fraction, seed)
    data.require_every_class(train, product, "the training split")
    parts = {"train": train, "validation": validation}
    manifest = data.dataset_manifest(parts, rejected, {"train": str(dataset)})
    splits = {name: Split.of(part, pipeline.read_images(repository, product, part, reader, progress), product)
              for name, part in parts.items()}
    return splits, {"counts": manifest["counts"], "dropped": len(rejected)}


def tune(product: Product, dataset: Path, repository: Path, out: Path, trials: int, seed: int = 0,
         space: SearchSpace = SearchSpace(), validation_fraction: float = 0.2,
         pruner: optuna.pruners.BasePruner | None = None) -> dict:
    """Search, then write ``out`` (whole or not at all); returns what was written."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # rich prints one line per trial instead
    started = time.perf_counter()
    with Progress() as progress:
        splits, counts = training_splits(product, dataset, repository, validation_fraction, seed, progress)
        study = search(splits["train"], splits["validation"], trials, seed, space, pruner=pruner, progress=progress)
    details = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "product": product.name,
               "dataset": str(dataset),
               "validation_fraction": validation_fraction, "seed": seed, "trial_budget": trials,
               "search_space": asdict(space), **counts, "seconds": round(time.perf_counter() - started, 1)}
    result = record(study, details)
    write_json(out, result)
    return result


def write_json(path: Path, value: dict) -> None:
    partial = Path(path).with_name(Path(path).name + ".partial")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    partial.replace(path)


def _bad_value(name: str, value) -> str | None:
    """Why ``value`` cannot be the setting ``name``, or None when it can."""
    kind = type(getattr(TrainSettings, name))
    if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
        return f"{name}={json.dumps(value)} (not {'a whole number' if kind is int else 'a number'})"
    low, high = LIMITS[name]
    if not low <= value <= high:
        return f"{name}={json.dumps(value)} (outside {low}..{high})"
    return None


def load_params(path: Path) -> TrainSettings:
    """TrainSettings from a params file (``tune``'s best.json, or ``{"params": {...}}``); fields left out keep
    their defaults. Raises ParamsError naming every unknown key or bad value."""
    try:
        params = json.loads(Path(path).read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ParamsError(f"{path} is not a params file with a \"params\" object ({type(error).__name__}: "
                          f"{error})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: \"params\" is not an object")
    known = [field.name for field in fields(TrainSettings)]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ParamsError(f"{path}: unknown keys {', '.join(unknown)} (known: {', '.join(known)})")
    bad = [reason for name, value in params.items() if (reason := _bad_value(name, value))]
    if bad:
        raise ParamsError(f"{path}: bad values {'; '.join(bad)}")
    return TrainSettings(**params)
