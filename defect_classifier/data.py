"""The classifiers' data: datasets read as Lookout reads them, checked, split, versioned, read through DALI.

A dataset is a Lookout for Vision dataset (``defect_data.lookout``: one manifest or one per
split, or ``normal/`` and ``anomaly/`` folders; local paths or ``s3://``), which is also
how ``defect_data.pipeline`` writes its synthetic ones. Lookout's rules are checked first
and a broken one stops the run with a one-line error naming the file and the rule. What
an anomaly shows comes from the colours of its mask: the pixels are the ground truth,
the file name is not trusted. The classes must be the product's own. The same image
twice (or a test image also in training) is dropped, and the report says so.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from defect_data import lookout
from products import Product

# Lookout's minimums per role: a training pool, and a test set.
MIN_POOL = {"normal": 10, "anomaly": 0}
MIN_TEST = {"normal": 10, "anomaly": 10}


class DatasetError(ValueError):
    """The data cannot train the models; the message says what is missing or which rule is broken."""


@dataclass(frozen=True)
class Example:
    path: str  # the image reference (local path or s3:// URL)
    anomaly: bool
    classes: tuple[str, ...]  # the product's classes the image shows (its mask), colour-map order
    sha256: str
    mask: str | None = None
    split: str | None = None  # the dataset's own split, when it has one


@dataclass(frozen=True)
class Rejected:
    source: str
    reason: str


def read(dataset: Path, product: Product, reader: lookout.Reader) -> list[Example]:
    """Every image of a dataset as an example of the product; DatasetError for a broken rule."""
    try:
        found = lookout.read_dataset(dataset)
        lookout.check_rules(found, reader, minimums=False)
        return [_example(record, product, reader) for record in found.records]
    except lookout.LookoutError as error:
        raise DatasetError(str(error)) from None


def _example(record: lookout.Record, product: Product, reader: lookout.Reader) -> Example:
    data = reader.read_bytes(record.source)
    classes: tuple[str, ...] = ()
    if record.mask is not None:
        strangers = {name: color for name, color in record.color_map.items()
                     if product.color_map.get(name) != color}
        if strangers:
            listed = ", ".join(f"{name} {color}" for name, color in strangers.items())
            raise lookout.LookoutError(f"{record.where}: classes {listed} are not the product {product.name}'s "
                                       f"({', '.join(f'{n} {c}' for n, c in product.color_map.items())}); "
                                       "a dataset must use its product's classes and colours")
        shown = lookout.classes_present(reader.image(record.mask), record.color_map, record.where)
        classes = tuple(name for name in product.class_names if name in shown)
    return Example(record.source, record.anomalous, classes, hashlib.sha256(data).hexdigest(), record.mask,
                   record.split)


def drop_duplicates(examples: list[Example], seen: set[str] | None = None) -> tuple[list[Example], list[Rejected]]:
    """The examples whose image was not taken before, and the dropped ones with the reason."""
    seen = set() if seen is None else seen
    kept, rejected = [], []
    for example in examples:
        if example.sha256 in seen:
            rejected.append(Rejected(example.path, "the same image is already in the data (duplicate, or test "
                                                   "image also in training)"))
            continue
        seen.add(example.sha256)
        kept.append(example)
    return kept, rejected


def require_minimums(examples: list[Example], minimums: dict[str, int], where: str) -> None:
    """Lookout's minimum image counts for a role (training pool or test set)."""
    counts = {"normal": sum(not e.anomaly for e in examples), "anomaly": sum(e.anomaly for e in examples)}
    short = [f"{counts[kind]} {kind} (at least {needed})" for kind, needed in minimums.items() if counts[kind] < needed]
    if short:
        raise DatasetError(f"{where} has {', '.join(short)} images; Lookout needs at least "
                           f"{minimums['normal']} normal and {minimums['anomaly']} anomalous images there")


def require_every_class(examples: list[Example], product: Product, where: str) -> None:
    """Both verdicts and every class of the product need examples; checked before any training."""
    counts = {"normal": sum(not e.anomaly for e in examples), "anomaly": sum(e.anomaly for e in examples),
              **{name: sum(name in e.classes for e in examples) for name in product.class_names}}
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise DatasetError(f"{where} has no examples of {', '.join(empty)} (counts: {json.dumps(counts)}); "
                           "every class needs examples before training can start")


def split(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(rest, held out): ``fraction`` of each stratum (verdict and classes shown) held out."""
    rng = np.random.default_rng(seed)
    strata: dict[tuple, list[Example]] = {}
    for example in examples:
        strata.setdefault((example.anomaly, example.classes), []).append(example)
    rest, held_out = [], []
    for key in sorted(strata, key=str):
        group = [strata[key][i] for i in rng.permutation(len(strata[key]))]
        count = int(round(len(group) * fraction))
        held_out += group[:count]
        rest += group[count:]
    return rest, held_out


def dataset_manifest(parts: dict[str, list[Example]], rejected: list[Rejected], sources: dict[str, str]) -> dict:
    """Every example with its split and hash; the version hashes the contents, not where they lie."""
    entries = [{**asdict(example), "split": name} for name, part in parts.items() for example in part]
    contents = sorted((e["split"], e["sha256"], e["anomaly"], e["classes"]) for e in entries)
    version = hashlib.sha256(json.dumps(contents).encode()).hexdigest()[:16]
    counts = {name: {"normal": sum(not e.anomaly for e in part), "anomaly": sum(e.anomaly for e in part)}
              for name, part in parts.items()}
    return {"version": version, "sources": sources, "counts": counts,
            "rejected": [asdict(entry) for entry in rejected], "examples": entries}


def dataset_seed(dataset: Path) -> int | None:
    """The seed of a ``defect_data.pipeline`` dataset (from its dataset_version.json), if recorded."""
    record = Path(dataset) / "dataset_version.json"
    return json.loads(record.read_text())["parameters"]["seed"] if record.is_file() else None


def class_matrix(examples: list[Example], product: Product) -> np.ndarray:
    """[N, classes] 0/1: which of the product's classes each example shows."""
    return np.array([[name in e.classes for name in product.class_names] for e in examples],
                    dtype=np.float32).reshape(-1, len(product.classes))

