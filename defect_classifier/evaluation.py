"""Metrics as Lookout reported them, from scikit-learn: precision, recall, F1, ROC AUC, average precision.

Scores come from the ONNX files that will be served (ONNX Runtime), not from the PyTorch
modules they were traced from. A served score >= 0.5 is over the version's own threshold
(chosen on validation, folded into the model: ``choose_threshold``), so every report
decides at ``THRESHOLD``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn import metrics

THRESHOLD = 0.5  # of the served (threshold-folded) scores


def choose_threshold(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """The probability threshold with the best F1 of the positive class on validation.

    Of the thresholds that reach it, the middle of the widest gap between scores is kept,
    so that the choice does not sit on one validation image. 0.5 when validation has one
    class only (nothing to choose from).
    """
    truth, scores = np.asarray(truth, bool).reshape(-1), np.asarray(probabilities, np.float64).reshape(-1)
    if truth.all() or not truth.any():
        return 0.5
    levels = np.unique(scores)
    candidates = np.concatenate([[levels[0] / 2], (levels[:-1] + levels[1:]) / 2, [(levels[-1] + 1) / 2]])
    f1 = np.array([metrics.f1_score(truth, scores >= t, zero_division=0) for t in candidates])
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)  # consecutive candidates reach the same F1
    widest = max(runs, key=lambda run: candidates[run[-1]] - candidates[run[0]])
    return float(np.clip((candidates[widest[0]] + candidates[widest[-1]]) / 2, 1e-4, 1 - 1e-4))


def _ranking(truth: np.ndarray, scores: np.ndarray) -> dict:
    """ROC AUC and average precision; None where the truth has one class only."""
    if truth.all() or not truth.any():
        return {"roc_auc": None, "average_precision": None}
    return {"roc_auc": float(metrics.roc_auc_score(truth, scores)),
            "average_precision": float(metrics.average_precision_score(truth, scores))}


def binary_scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Precision, recall, F1 of the positive class, its support, and [[TN, FP], [FN, TP]]."""
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        truth, predicted, labels=[True], average=None, zero_division=0)
    return {"precision": float(precision[0]), "recall": float(recall[0]), "f1": float(f1[0]),
            "support": int(truth.sum()),
            "confusion": metrics.confusion_matrix(truth, predicted, labels=[False, True]).tolist()}


def parent_report(truth_anomaly: np.ndarray, scores: np.ndarray) -> dict:
    """Both verdicts as the positive class in turn; ``f1`` is their mean (macro); AUC and AP of anomaly."""
    truth = np.asarray(truth_anomaly, bool).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    predicted = scores >= THRESHOLD
    anomaly = binary_scores(truth, predicted)
    normal = binary_scores(~truth, ~predicted)
    return {"f1": (anomaly["f1"] + normal["f1"]) / 2,
            "accuracy": float(metrics.accuracy_score(truth, predicted)) if len(truth) else 0.0,
            **_ranking(truth, scores), "per_label": {"normal": normal, "anomaly": anomaly},
            "count": int(len(truth)), "confusion_labels": ["normal", "anomaly"], "confusion": anomaly["confusion"]}


def child_report(truth_classes: np.ndarray, scores: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """Per class; ``f1`` is the macro mean, ``micro`` pools every decision."""
    truth = np.asarray(truth_classes, bool).reshape(-1, len(class_names))
    scores = np.asarray(scores, np.float64).reshape(-1, len(class_names))
    predicted = scores >= THRESHOLD
    per_label = {name: {**binary_scores(truth[:, i], predicted[:, i]), **_ranking(truth[:, i], scores[:, i])}
                 for i, name in enumerate(class_names)}
    return {"f1": float(np.mean([entry["f1"] for entry in per_label.values()])) if per_label else 0.0,
            "micro": binary_scores(truth.reshape(-1), predicted.reshape(-1)),
            "exact_match": float(np.mean(np.all(truth == predicted, axis=1))) if len(truth) else 0.0,
            "per_label": per_label, "count": int(len(truth))}


def confusion_png(path: Path, title: str, matrices: dict[str, list[list[int]]], labels: list[str]) -> Path:
    """One panel per matrix: rows truth, columns prediction, counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(matrices), figsize=(2.8 * len(matrices) + 0.6, 3.2), squeeze=False)
    for axis, (name, matrix) in zip(axes[0], matrices.items()):
        values = np.array(matrix)
        axis.imshow(values, cmap="Blues", vmin=0, vmax=max(1, values.max()))
        for (row, column), count in np.ndenumerate(values):
            axis.text(column, row, str(count), ha="center", va="center",
                      color="white" if count > values.max() / 2 else "black")
        axis.set_xticks(range(len(labels)), labels)
        axis.set_yticks(range(len(labels)), labels)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(name)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def score_text(value) -> str:
    """A score with three decimals, "-" where it is undefined (None)."""
    return "-" if value is None else f"{value:.3f}"


def _table(report: dict) -> list[str]:
    rows = ["| label | precision | recall | F1 | ROC AUC | AP | support |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, entry in report["per_label"].items():
        rows.append(f"| {name} | {entry['precision']:.3f} | {entry['recall']:.3f} | {score_text(entry['f1'])} "
                    f"| {score_text(entry.get('roc_auc'))} | {score_text(entry.get('average_precision'))} "
                    f"| {entry['support']} |")
    return rows


def _pixel_lines(report: dict) -> list[str]:
    """A segmenter's IoU per label and means (nothing for the other models)."""
    if "mean_iou" not in report:
        return []
    ious = ", ".join(f"{name} {score_text(entry['iou'])}" for name, entry in report["per_label"].items())
    return [f"Pixel scores. Mean IoU of the defect classes {score_text(report['mean_iou'])}, with background "
            f"{score_text(report['mean_iou_with_background'])}; F1 above is the defect classes' mean pixel F1 (with "
            f"background {score_text(report['f1_with_background'])}). IoU: {ious}.", ""]


def write_report(version_dir: Path, model: str, reports: dict[str, dict], details: dict) -> dict:
    """``evaluation.json``, ``evaluation.md`` and ``confusion_matrix.png`` (test split) in the version folder."""
    record = {"model": model, **details, "splits": reports}
    (version_dir / "evaluation.json").write_text(json.dumps(record, indent=2) + "\n")
    threshold = "argmax per pixel, no threshold" if details["threshold"] is None else \
        f"threshold {json.dumps(details['threshold'])} chosen on validation"
    lines = [f"# {model}: evaluation", "", f"Product {details['product']}, dataset version {details['dataset_version']}; "
             f"validation F1 {reports['validation']['f1']:.4f} (promotion compares this); {threshold}; "
             f"trained in {details['training_seconds']} s.", ""]
    for split, report in reports.items():
        lines += [f"## {split} ({report['count']} images): F1 {report['f1']:.4f}", "", *_pixel_lines(report),
                  *_table(report), ""]
    (version_dir / "evaluation.md").write_text("\n".join(lines))
    test = reports["test"]
    if "confusion" in test:
        matrices, labels = {model: test["confusion"]}, test["confusion_labels"]
    else:
        matrices, labels = {name: entry["confusion"] for name, entry in test["per_label"].items()}, ["absent", "present"]
    if matrices:
        confusion_png(version_dir / "confusion_matrix.png", f"{model}, test set", matrices, labels)
    return record
