"""Precision, recall, F1 and confusion matrices of the exported models, and the report files.

Scores come from the ONNX files that will be served (ONNX Runtime), not from the
PyTorch modules they were traced from.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from builders.defect_architecture import CLASSES

THRESHOLD = 0.5


def binary_scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Precision, recall, F1 of the positive class, its support, and [[TN, FP], [FN, TP]]."""
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    tp, fp = int(np.sum(truth & predicted)), int(np.sum(~truth & predicted))
    fn, tn = int(np.sum(truth & ~predicted)), int(np.sum(~truth & ~predicted))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn,
            "confusion": [[tn, fp], [fn, tp]]}


def parent_report(truth_anomaly: np.ndarray, scores: np.ndarray) -> dict:
    """Both verdicts as the positive class in turn; ``f1`` is their mean (macro)."""
    predicted = np.asarray(scores).reshape(-1) >= THRESHOLD
    anomaly = binary_scores(truth_anomaly, predicted)
    normal = binary_scores(~np.asarray(truth_anomaly, bool), ~predicted)
    return {"f1": (anomaly["f1"] + normal["f1"]) / 2, "accuracy": float(np.mean(predicted == truth_anomaly)),
            "per_label": {"normal": normal, "anomaly": anomaly}, "count": int(len(predicted)),
            "confusion_labels": ["normal", "anomaly"], "confusion": anomaly["confusion"]}


def child_report(truth_missing: np.ndarray, scores: np.ndarray) -> dict:
    """Per component class; ``f1`` is the macro mean, ``micro`` pools every decision."""
    predicted = np.asarray(scores) >= THRESHOLD
    truth = np.asarray(truth_missing, bool)
    per_label = {name: binary_scores(truth[:, i], predicted[:, i]) for i, name in enumerate(CLASSES)}
    return {"f1": float(np.mean([entry["f1"] for entry in per_label.values()])),
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


def _table(report: dict) -> list[str]:
    rows = ["| label | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    for name, entry in report["per_label"].items():
        rows.append(f"| {name} | {entry['precision']:.3f} | {entry['recall']:.3f} | {entry['f1']:.3f} "
                    f"| {entry['support']} |")
    return rows


def write_report(version_dir: Path, model: str, reports: dict[str, dict], details: dict) -> dict:
    """``evaluation.json``, ``evaluation.md`` and ``confusion_matrix.png`` (test split) in the version folder."""
    record = {"model": model, **details, "splits": reports}
    (version_dir / "evaluation.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# {model}: evaluation", "", f"Dataset version {details['dataset_version']}; "
             f"validation F1 {reports['validation']['f1']:.4f} (promotion compares this); "
             f"trained in {details['training_seconds']} s.", ""]
    for split, report in reports.items():
        lines += [f"## {split} ({report['count']} images): F1 {report['f1']:.4f}", "", *_table(report), ""]
    (version_dir / "evaluation.md").write_text("\n".join(lines))
    test = reports["test"]
    if "confusion" in test:
        matrices, labels = {model: test["confusion"]}, test["confusion_labels"]
    else:
        matrices, labels = {name: entry["confusion"] for name, entry in test["per_label"].items()}, ["present", "missing"]
    confusion_png(version_dir / "confusion_matrix.png", f"{model}, test set", matrices, labels)
    return record
