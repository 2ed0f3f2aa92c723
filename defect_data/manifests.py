"""Lookout for Vision / Ground Truth manifests of the generated dataset (JSON lines).

Normal images carry ``auto-label`` 1 ("normal"), anomalies 0 ("anomaly") plus an
``anomaly-mask-ref`` with the colour map of the missing components, as in the AWS post.
References are local paths or ``s3://bucket/prefix/...`` URLs.
"""
from __future__ import annotations

import json
from pathlib import Path

from defect_data import lookout

LABELS = {"normal": 1, "anomaly": 0}


def image_line(source_ref: str, label: str) -> dict:
    if label not in LABELS:
        raise ValueError(f"label {label!r} is not one of {', '.join(LABELS)}")
    return {"source-ref": source_ref, "auto-label": LABELS[label],
            "auto-label-metadata": {"confidence": 1, "job-name": "labeling-job/auto-label", "class-name": label,
                                    "human-annotated": "yes", "creation-date": lookout.creation_date(),
                                    "type": "groundtruth/image-classification"}}


def anomaly_line(source_ref: str, mask_ref: str, color_map: dict[str, str]) -> dict:
    """An anomaly whose mask paints each missing component in its class colour."""
    return {**image_line(source_ref, "anomaly"), **lookout.mask_attributes(mask_ref, color_map)}


def reference(base: str, split: str, name: str) -> str:
    """Where a file of the dataset is referenced from: a local folder or s3://bucket/prefix."""
    return f"{base.rstrip('/')}/{split}/{name}"


def write(path: Path, lines: list[dict]) -> Path:
    """All lines or nothing: written under a temporary name, then renamed."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(line) + "\n" for line in lines))
    partial.replace(path)
    return path
