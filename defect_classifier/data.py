"""The classifiers' data: manifests checked entry by entry, split, versioned, and read through DALI.

Quality checks drop an entry and say why when its image or mask cannot be read, its
labels disagree (``auto-label`` vs ``class-name``, a normal with an anomaly mask, an
anomaly whose mask shows nothing or shows other classes than its colour map lists),
it names a class the child does not know, or it repeats an image already taken.
What is missing from an anomaly comes from the colours its mask shows: the pixels are
the ground truth, the file name is not trusted.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from builders.defect_architecture import CLASSES
from clients.colormap import parse_hex
from defect_data.manifests import LABELS

NORMAL, ANOMALY = LABELS["normal"], LABELS["anomaly"]


class DatasetError(ValueError):
    """The data cannot train the models; the message says what is missing."""


@dataclass(frozen=True)
class Example:
    path: str
    anomaly: bool
    missing: tuple[str, ...]  # component classes absent from the image, colour-map order
    sha256: str


@dataclass(frozen=True)
class Rejected:
    source: str
    reason: str


def read_manifest(path: Path) -> list[dict | str]:
    """The JSON lines of a manifest; a line that is not JSON stays as its text (QA rejects it)."""
    if not Path(path).is_file():
        raise DatasetError(f"manifest {path} does not exist; build the dataset with python -m defect_data.pipeline")
    lines = []
    for text in Path(path).read_text().splitlines():
        if text.strip():
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:
                lines.append(text)
    return lines


def _readable_image(reference: str) -> tuple[np.ndarray, bytes]:
    if reference.startswith("s3://"):
        raise ValueError("an s3:// reference: download the dataset and point the manifest at the files")
    data = Path(reference).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")), data


def _missing_classes(line: dict) -> tuple[str, ...]:
    """The classes the anomaly mask paints, checked against the colour map the line carries."""
    mask, _ = _readable_image(line["anomaly-mask-ref"])
    color_map = line["anomaly-mask-ref-metadata"]["internal-color-map"]
    by_colour = {parse_hex(entry["hex-color"]): entry["class-name"] for entry in color_map.values()}
    background = parse_hex(color_map["0"]["hex-color"])
    shown = {tuple(int(v) for v in colour) for colour in np.unique(mask.reshape(-1, 3), axis=0)} - {background}
    unknown = shown - set(by_colour)
    if unknown:
        raise ValueError(f"mislabeled: mask colours {sorted(unknown)} are not in its colour map")
    missing = {by_colour[colour] for colour in shown}
    listed = {entry["class-name"] for key, entry in color_map.items() if key != "0"}
    if not missing:
        raise ValueError("mislabeled: an anomaly whose mask shows no missing component")
    if missing != listed:
        raise ValueError(f"mislabeled: the colour map lists {sorted(listed)} but the mask shows {sorted(missing)}")
    strangers = missing - set(CLASSES)
    if strangers:
        raise ValueError(f"unknown component classes {sorted(strangers)}; the child knows {', '.join(CLASSES)}")
    return tuple(name for name in CLASSES if name in missing)


def _example(line: dict | str) -> Example:
    if not isinstance(line, dict) or "source-ref" not in line:
        raise ValueError("not a manifest entry (no JSON object with source-ref)")
    label, name = line.get("auto-label"), line.get("auto-label-metadata", {}).get("class-name")
    if label not in (NORMAL, ANOMALY) or LABELS.get(name) != label:
        raise ValueError(f"mislabeled: auto-label {label!r} with class-name {name!r}")
    try:
        _, data = _readable_image(line["source-ref"])
    except (OSError, ValueError) as error:
        raise ValueError(f"unreadable image: {error}") from None
    if label == NORMAL:
        if "anomaly-mask-ref" in line:
            raise ValueError("mislabeled: a normal image with an anomaly mask")
        missing = ()
    else:
        try:
            missing = _missing_classes(line)
        except (OSError, KeyError) as error:
            raise ValueError(f"unreadable anomaly mask: {error}") from None
    return Example(line["source-ref"], label == ANOMALY, missing, hashlib.sha256(data).hexdigest())


def quality_check(lines: list[dict | str], seen: set[str] | None = None) -> tuple[list[Example], list[Rejected]]:
    """The usable examples, and every rejected entry with its reason. ``seen``: hashes already taken."""
    seen = set() if seen is None else seen
    examples, rejected = [], []
    for line in lines:
        source = line.get("source-ref", "?") if isinstance(line, dict) else str(line)[:80]
        try:
            example = _example(line)
        except ValueError as error:
            rejected.append(Rejected(source, str(error)))
            continue
        if example.sha256 in seen:
            rejected.append(Rejected(source, "the same image is already in the data (duplicate, or test image "
                                             "also in training)"))
            continue
        seen.add(example.sha256)
        examples.append(example)
    return examples, rejected


def require_every_class(examples: list[Example], where: str) -> None:
    """Both verdicts and every component class need examples; checked before any training."""
    counts = {"normal": sum(not e.anomaly for e in examples), "anomaly": sum(e.anomaly for e in examples),
              **{name: sum(name in e.missing for e in examples) for name in CLASSES}}
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise DatasetError(f"{where} has no examples of {', '.join(empty)} (counts: {json.dumps(counts)}); "
                           "every class needs examples before training can start")


def split(examples: list[Example], validation_fraction: float, seed: int) -> dict[str, list[Example]]:
    """Train and validation, stratified by what is missing (normals are one stratum)."""
    rng = np.random.default_rng(seed)
    strata: dict[tuple, list[Example]] = {}
    for example in examples:
        strata.setdefault((example.anomaly, example.missing), []).append(example)
    parts = {"train": [], "validation": []}
    for key in sorted(strata, key=str):
        group = [strata[key][i] for i in rng.permutation(len(strata[key]))]
        count = int(round(len(group) * validation_fraction))
        parts["validation"] += group[:count]
        parts["train"] += group[count:]
    return parts


def dataset_manifest(parts: dict[str, list[Example]], rejected: list[Rejected], sources: dict[str, str]) -> dict:
    """Every example with its split and hash; the version hashes the contents, not where they lie."""
    entries = [{"split": name, **asdict(example)} for name, part in parts.items() for example in part]
    contents = sorted((e["split"], e["sha256"], e["anomaly"], e["missing"]) for e in entries)
    version = hashlib.sha256(json.dumps(contents).encode()).hexdigest()[:16]
    counts = {name: {"normal": sum(not e.anomaly for e in part), "anomaly": sum(e.anomaly for e in part)}
              for name, part in parts.items()}
    return {"version": version, "sources": sources, "counts": counts,
            "rejected": [asdict(entry) for entry in rejected], "examples": entries}


def dataset_seed(manifest: Path) -> int | None:
    """The seed of a ``defect_data.pipeline`` dataset (from its dataset_version.json), if recorded."""
    record = Path(manifest).parent / "dataset_version.json"
    return json.loads(record.read_text())["parameters"]["seed"] if record.is_file() else None


def missing_matrix(examples: list[Example]) -> np.ndarray:
    """[N, classes] 0/1: which components each example misses."""
    return np.array([[name in e.missing for name in CLASSES] for e in examples], dtype=np.float32).reshape(-1, len(CLASSES))
