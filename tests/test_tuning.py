"""Tuning: the Optuna search over training settings, best.json, and ``train --params``.

The search itself runs on small synthetic boards built as arrays (five bright parts at
fixed places, an anomaly lacks one), since it needs nothing but images and labels; the
commands run on a dataset made by ``defect_data.pipeline`` against the session server,
read through the repository's own ``pcb_dali``.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import optuna
import pytest

from builders import defect_inspection, defect_parent
from builders.declaration import BuildOptions
from builders.repository import build_repository
from defect_classifier import tuning
from defect_classifier.__main__ import main as classifier_main
from defect_classifier.training import TrainSettings

TINY = tuning.SearchSpace(epochs=(1, 1))  # one epoch: the machine is small
PART = 40  # side of a synthetic part, pixels


def boards(product, normals: int, anomalies_per_class: int, seed: int) -> tuning.Split:
    """Dark noisy boards of the product's size with one bright square per class; an anomaly lacks exactly one."""
    rng = np.random.default_rng(seed)
    classes = product.class_names
    lacking = [None] * normals + [index for index in range(len(classes)) for _ in range(anomalies_per_class)]
    images = (rng.normal(-0.5, 0.05, (len(lacking), 3, product.height, product.width))).astype(np.float32)
    missing = np.zeros((len(lacking), len(classes)), np.float32)
    for row, absent in enumerate(lacking):
        for index in range(len(classes)):
            if index != absent:
                left = 20 + index * 60
                images[row, :, 100:100 + PART, left:left + PART] = 0.8
        if absent is not None:
            missing[row, absent] = 1
    anomaly = missing.any(axis=1)
    return tuning.Split(images, anomaly, missing, classes, anomaly, "fixed")  # every anomaly's classes are known


@pytest.fixture(scope="module")
def splits(board) -> dict[str, tuning.Split]:
    return {"train": boards(board, 4, 1, seed=0), "validation": boards(board, 2, 1, seed=1)}


def tiny_study(splits, seed=0, trials=3, pruner=None) -> optuna.Study:
    return tuning.search(splits["train"], splits["validation"], trials, seed, TINY,
                         base=TrainSettings(seed=seed, batch_size=8), pruner=pruner)


class PruneTrialOne(optuna.pruners.BasePruner):
    """Prunes trial 1 at its first report: a trial known to be stopped, whatever the scores."""

    def prune(self, study, trial) -> bool:
        return trial.number == 1


def test_a_tiny_study_writes_every_trial_and_the_best_ones_settings(splits, tmp_path):
    best_json = tmp_path / "best.json"
    tuning.write_json(best_json, tuning.record(tiny_study(splits), {"seed": 0}))
    written = json.loads(best_json.read_text())
    assert [trial["number"] for trial in written["trials"]] == [0, 1, 2]
    for trial in written["trials"]:
        assert set(trial["params"]) == {"learning_rate", "weight_decay", "epochs", "augmentation"}
        assert trial["state"] == "complete" and 0 <= trial["validation_f1"] <= 1
        assert len(trial["reported"]) == 2  # the parent and the child each reported their F1
    best = max(written["trials"], key=lambda trial: trial["validation_f1"])
    assert written["best_trial"] == best["number"] and written["validation_f1"] == best["validation_f1"]
    searched = {name: written["params"][name] for name in ("learning_rate", "weight_decay", "epochs")}
    assert searched == {name: best["params"][name] for name in searched}
    assert written["params"]["shift"] == pytest.approx(TrainSettings.shift * best["params"]["augmentation"])
    assert asdict(tuning.load_params(best_json)) == written["params"]


def test_the_same_seed_draws_the_same_trials_with_the_same_scores(splits):
    first, again, other = (tiny_study(splits, seed, trials=2) for seed in (0, 0, 1))
    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert [t.value for t in first.trials] == [t.value for t in again.trials]
    assert [t.params for t in first.trials] != [t.params for t in other.trials]


def test_a_pruned_trial_stops_early_and_is_recorded_as_pruned(splits):
    written = tuning.record(tiny_study(splits, pruner=PruneTrialOne()), {})
    states = {trial["number"]: trial["state"] for trial in written["trials"]}
    assert states == {0: "complete", 1: "pruned", 2: "complete"}
    pruned = written["trials"][1]
    assert list(pruned["reported"].values()) == [pruned["validation_f1"]]  # stopped at its first report
    assert written["best_trial"] != 1  # only complete trials can be the best, whatever the pruned one scored


def test_a_study_whose_every_trial_was_pruned_recommends_nothing(splits):
    with pytest.raises(tuning.TuningError, match="none of the 2 trials completed"):
        tuning.record(tiny_study(splits, trials=2, pruner=optuna.pruners.ThresholdPruner(lower=2.0)), {})


def test_the_base_settings_are_trial_zero_so_the_best_is_never_worse_than_them(splits):
    base = TrainSettings(epochs=1, batch_size=8)
    study = tuning.search(splits["train"], splits["validation"], 2, 0, TINY, base=base)
    assert study.trials[0].params == {"learning_rate": base.learning_rate, "weight_decay": base.weight_decay,
                                      "epochs": 1, "augmentation": 1.0}
    assert study.trials[0].user_attrs["settings"] == asdict(base)
    assert study.best_value >= study.trials[0].value


@pytest.mark.parametrize("params, named", [
    ({"learning_rate": 1e-3, "width": 2}, "unknown keys width"),
    ({"epochs": 2.5}, "epochs=2.5 (not a whole number)"),
    ({"learning_rate": -1}, "learning_rate=-1 (outside"),
    ({"batch_size": True}, "batch_size=true (not a whole number)"),
])
def test_train_refuses_a_params_file_with_an_unknown_key_or_a_bad_value_in_one_line(params, named, cpu_repository,
                                                                                   tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"params": params}))
    code = classifier_main(["train", "--params", str(bad), "--dataset", str(tmp_path / "none"),
                            "--test-dataset", str(tmp_path / "none"), "--repository", str(cpu_repository)])
    error = capsys.readouterr().err
    assert code == 2 and named in error and len(error.strip().splitlines()) == 1


# The commands, on the session's datasets that defect_data.pipeline makes against the session server
# (a smaller pair would miss Lookout's minimums: 10 normals to train, 10 normals and 10 anomalies to test).

@pytest.fixture(scope="module")
def repository(board, tmp_path_factory) -> Path:
    """The sample board's pipeline alone (its folder carries the product the commands find)."""
    repository = tmp_path_factory.mktemp("tuning-repository") / "cpu"
    build_repository(repository, BuildOptions(target="cpu", products=(board,),
                                              models=tuple(defect_inspection.models(board))))
    return repository


@pytest.fixture(scope="module")
def best_json(datasets, repository, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tuning") / "best.json"
    assert classifier_main(["tune", "--dataset", str(datasets["train"]), "--repository", str(repository),
                            "--trials", "2", "--max-epochs", "1", "--out", str(out)]) == 0
    return out


def test_tune_command_writes_best_json_from_the_train_and_validation_split(best_json):
    written = json.loads(best_json.read_text())
    assert len(written["trials"]) == 2 and written["params"]["epochs"] == 1
    assert set(written["counts"]) == {"train", "validation"}  # the test dataset is never read
    assert written["validation_f1"] == max(trial["validation_f1"] for trial in written["trials"])


def test_train_with_params_trains_with_the_files_settings(best_json, datasets, repository, board):
    assert classifier_main(["train", "--params", str(best_json), "--dataset", str(datasets["train"]),
                            "--test-dataset", str(datasets["test"]), "--repository", str(repository)]) == 0
    report = json.loads((repository / defect_parent.name(board) / "2" / "evaluation.json").read_text())
    assert report["training"] == json.loads(best_json.read_text())["params"]
