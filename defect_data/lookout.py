"""Amazon Lookout for Vision datasets, read and checked against Lookout's rules.

A dataset is one of:

* one manifest (JSON lines), or a folder holding exactly one ``*.manifest``;
* a folder with ``train.manifest`` and ``test.manifest`` (a split dataset);
* a folder of images as the console imports it: ``normal/`` and ``anomaly/``, or
  ``train/normal``, ``train/anomaly``, ``test/normal``, ``test/anomaly`` (split). No masks.

A manifest line names its image in ``source-ref``: a local path (absolute, or relative to
the manifest's folder) or ``s3://bucket/key``. Its verdict is a classification attribute,
``anomaly-label`` (Lookout's) or ``auto-label`` (this project's), whose
``<attribute>-metadata`` holds ``class-name`` "normal" or "anomaly". The number in the
attribute itself is ignored: AWS samples disagree on whether 1 means normal or anomaly.
A segmented anomaly adds ``anomaly-mask-ref`` (a PNG colour mask, same reference rules)
and ``anomaly-mask-ref-metadata`` whose ``internal-color-map`` maps indices ("0" is the
background) to ``class-name`` and ``hex-color``::

    {"source-ref": "anomaly/3.png", "anomaly-label": 1,
     "anomaly-label-metadata": {"class-name": "anomaly", "type": "groundtruth/image-classification", ...},
     "anomaly-mask-ref": "masks/3.png",
     "anomaly-mask-ref-metadata": {"internal-color-map": {
         "0": {"class-name": "BACKGROUND", "hex-color": "#ffffff"},
         "1": {"class-name": "crack", "hex-color": "#23A436"}}, ...}}

Lookout's rules (``check_rules``): at least 20 normal and 10 anomalous images without a
split; with one, at least 10 normal training images and 10 normal + 10 anomalous test
images; PNG or JPEG, 64-4096 pixels per side, at most 8 MB each, one size per dataset.
Every bad input is a one-line ``LookoutError`` naming the file (and manifest line) and the rule.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy
from PIL import Image, UnidentifiedImageError

from products.definition import ProductError, check_class_name, check_color

KNOWN_LABEL_ATTRIBUTES = ("anomaly-label", "auto-label")
VERDICTS = {"normal": False, "anomaly": True}
CLASSIFICATION = "groundtruth/image-classification"
SEGMENTATION = "groundtruth/semantic-segmentation"
MASK_ATTRIBUTE = "anomaly-mask-ref"
SPLITS = ("train", "test")
IMAGE_FORMATS = ("PNG", "JPEG")
MIN_SIDE, MAX_SIDE = 64, 4096
MAX_BYTES = 8 * 1024 * 1024
MIN_SINGLE = {"normal": 20, "anomaly": 10}
MIN_SPLIT = {("train", "normal"): 10, ("test", "normal"): 10, ("test", "anomaly"): 10}


class LookoutError(ValueError):
    """A dataset Lookout would refuse; the message names the file (and line) and the rule."""


def _error(where: str, rule: str) -> LookoutError:
    # One line, whatever the underlying library wrote.
    return LookoutError(" ".join(f"{where}: {rule}".split()))


@dataclass(frozen=True)
class Record:
    source: str  # the image reference, resolved: absolute local path or s3:// URL
    anomalous: bool
    mask: str | None  # resolved mask reference or None
    color_map: dict[str, str] | None  # class name -> "#rrggbb" lower-case, background first
    split: str | None  # "train" / "test" when the dataset says so
    where: str  # "path/to/train.manifest:12", or the image path for folder layouts


@dataclass(frozen=True)
class Dataset:
    root: str
    records: tuple[Record, ...]
    layout: str  # "manifest", "split-manifests" or "folders"

    @property
    def split(self) -> bool:
        return self.layout == "split-manifests" or any(record.split for record in self.records)


class Reader:
    """Opens local and s3:// references; one per dataset read."""

    def __init__(self, s3_client=None):
        self._s3 = s3_client

    def read_bytes(self, reference: str) -> bytes:
        if reference.startswith("s3://"):
            return self._read_s3(reference)
        try:
            return Path(reference).read_bytes()
        except OSError as error:
            raise _error(reference, f"cannot be read: {error.strerror or error}") from error

    def _read_s3(self, reference: str) -> bytes:
        import botocore.exceptions

        bucket, _, key = reference[len("s3://"):].partition("/")
        try:
            if self._s3 is None:  # created only when a dataset needs S3
                import boto3
                self._s3 = boto3.client("s3")
            return self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise _error(reference, f"cannot be read from S3: {error}") from error

    def image(self, reference: str) -> numpy.ndarray:
        """uint8 HxWx3 RGB."""
        return _decode(self.read_bytes(reference), reference, IMAGE_FORMATS)


def _open(data: bytes, where: str, formats: tuple[str, ...], kind: str = "images") -> Image.Image:
    """The image's header, refused unless it is one of ``formats``."""
    try:
        picture = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:  # its own message names only a BytesIO
        raise _error(where, f"cannot be decoded as an image; Lookout takes {' or '.join(formats)} {kind}") from error
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise _error(where, f"cannot be decoded as an image ({error}); Lookout takes PNG or JPEG") from error
    if picture.format not in formats:
        raise _error(where, f"is {picture.format}, not {' or '.join(formats)}; Lookout takes "
                            f"{' or '.join(formats)} {kind} only")
    return picture


def _decode(data: bytes, where: str, formats: tuple[str, ...], kind: str = "images") -> numpy.ndarray:
    picture = _open(data, where, formats, kind)
    try:
        return numpy.asarray(picture.convert("RGB"), dtype=numpy.uint8)
    except (OSError, ValueError, SyntaxError) as error:
        raise _error(where, f"cannot be decoded ({error})") from error


# ---- manifests -------------------------------------------------------------------------

def _resolve(reference, folder: Path, where: str, attribute: str) -> str:
    if not isinstance(reference, str) or not reference:
        raise _error(where, f"{attribute} must be a non-empty string (a path or s3:// URL)")
    if reference.startswith("s3://"):
        return reference
    if "\0" in reference:  # no file system takes it; Path.resolve would raise a bare ValueError
        raise _error(where, f"{attribute} contains a NUL character")
    path = Path(reference)
    return str(path if path.is_absolute() else (folder / path).resolve())


def _label_attribute(line: dict, where: str) -> str:
    """The line's one classification attribute; others (``*-label``) are refused by name."""
    named = {key for key in line if key.endswith("-label")}
    named |= {key[:-len("-metadata")] for key in line if key.endswith("-label-metadata")}
    known = sorted(name for name in named if name in KNOWN_LABEL_ATTRIBUTES)
    unknown = sorted(name for name in named - set(known)
                     if isinstance(line.get(f"{name}-metadata"), dict)
                     and line[f"{name}-metadata"].get("type") == CLASSIFICATION)
    if unknown:
        raise _error(where, f"label attribute {', '.join(unknown)} is not known; "
                            f"the reader knows {', '.join(KNOWN_LABEL_ATTRIBUTES)}")
    if not known:
        raise _error(where, f"no label attribute; expected one of {', '.join(KNOWN_LABEL_ATTRIBUTES)}")
    if len(known) > 1:
        raise _error(where, f"two label attributes ({', '.join(known)}); a line carries one")
    return known[0]


def _verdict(line: dict, where: str) -> bool:
    """True for an anomaly, from the metadata's class-name (never from the number)."""
    attribute = _label_attribute(line, where)
    metadata = line.get(f"{attribute}-metadata")
    if not isinstance(metadata, dict):
        raise _error(where, f"{attribute} has no {attribute}-metadata; its class-name gives the verdict")
    class_name = metadata.get("class-name")
    if class_name not in VERDICTS:
        raise _error(where, f"{attribute}-metadata class-name {class_name!r} is not 'normal' or 'anomaly'")
    return VERDICTS[class_name]


def _color_map(metadata, where: str) -> dict[str, str]:
    """Class name -> lower-case colour, in index order (background, index 0, first)."""
    entries = metadata.get("internal-color-map") if isinstance(metadata, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise _error(where, f"{MASK_ATTRIBUTE} needs {MASK_ATTRIBUTE}-metadata with an internal-color-map")
    try:
        indices = sorted(entries, key=int)
    except ValueError as error:
        raise _error(where, "internal-color-map keys must be integer indices") from error
    if int(indices[0]) != 0:
        raise _error(where, "internal-color-map has no index 0 (the background)")
    color_map: dict[str, str] = {}
    for index in indices:
        entry = entries[index] if isinstance(entries[index], dict) else {}
        name, color = entry.get("class-name"), entry.get("hex-color")
        try:
            check_class_name(name)
            check_color(color, name)
        except ProductError as error:
            raise _error(where, str(error)) from error
        if name in color_map or color.lower() in color_map.values():
            raise _error(where, f"internal-color-map repeats class {name} or colour {color}")
        color_map[name] = color.lower()
    return color_map


def _record(text: str, folder: Path, where: str, split: str | None) -> Record:
    try:
        line = json.loads(text)
    except json.JSONDecodeError as error:
        raise _error(where, f"not JSON ({error.msg}); a manifest holds one JSON object per line") from error
    except RecursionError:  # nested deeper than the JSON decoder goes
        raise _error(where, "not JSON (nested too deeply); a manifest holds one JSON object per line") from None
    if not isinstance(line, dict):
        raise _error(where, "not a JSON object; a manifest holds one JSON object per line")
    if "source-ref" not in line:
        raise _error(where, "no source-ref (the image reference)")
    source = _resolve(line["source-ref"], folder, where, "source-ref")
    anomalous = _verdict(line, where)
    if MASK_ATTRIBUTE not in line:
        return Record(source, anomalous, None, None, split, where)
    if not anomalous:
        raise _error(where, f"a normal image with a mask ({MASK_ATTRIBUTE}); only anomalies have masks")
    mask = _resolve(line[MASK_ATTRIBUTE], folder, where, MASK_ATTRIBUTE)
    color_map = _color_map(line.get(f"{MASK_ATTRIBUTE}-metadata"), where)
    return Record(source, anomalous, mask, color_map, split, where)


def read_manifest(path: Path, split: str | None = None) -> list[Record]:
    """Parses and resolves a manifest's lines; checks their structure, not their pixels."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise _error(str(path), f"cannot be read as a manifest ({error})") from error
    folder = path.resolve().parent
    return [_record(text, folder, f"{path}:{number}", split)
            for number, text in enumerate(lines, start=1) if text.strip()]


# ---- datasets ---------------------------------------------------------------------------

def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".")  # skip .DS_Store and the like


def _folder_records(folder: Path, split: str | None) -> list[Record]:
    records = []
    for verdict, anomalous in VERDICTS.items():
        images = folder / verdict
        if images.is_dir():
            records += [Record(str(image.resolve()), anomalous, None, None, split, str(image))
                        for image in sorted(images.iterdir()) if _is_image_file(image)]
    return records


def _read_folders(path: Path) -> Dataset:
    flat = any((path / verdict).is_dir() for verdict in VERDICTS)
    split = any((path / name).is_dir() for name in SPLITS)
    if flat and split:
        raise _error(str(path), "holds both normal/ anomaly/ and train/ test/ folders; use one layout")
    if not (flat or split):
        raise _error(str(path), "no manifest, no normal/ anomaly/ folders and no train/ test/ folders")
    if flat:
        records = _folder_records(path, None)
    else:
        records = [record for name in SPLITS for record in _folder_records(path / name, name)]
    return Dataset(str(path.resolve()), tuple(records), "folders")


def read_dataset(path: Path) -> Dataset:
    """A manifest, a folder of train.manifest + test.manifest (or one manifest), or image folders."""
    path = Path(path)
    if path.is_file():
        return Dataset(str(path.resolve()), tuple(read_manifest(path)), "manifest")
    if not path.is_dir():
        raise _error(str(path), "no such manifest or dataset folder")
    manifests = sorted(path.glob("*.manifest"))
    names = {manifest.name for manifest in manifests}
    if {"train.manifest", "test.manifest"} <= names:
        records = [record for split in SPLITS for record in read_manifest(path / f"{split}.manifest", split)]
        return Dataset(str(path.resolve()), tuple(records), "split-manifests")
    if len(manifests) == 1:
        return Dataset(str(manifests[0].resolve()), tuple(read_manifest(manifests[0])), "manifest")
    if manifests:
        raise _error(str(path), f"holds {len(manifests)} manifests ({', '.join(sorted(names))}); "
                                "expected one, or train.manifest and test.manifest")
    return _read_folders(path)


# ---- Lookout's rules --------------------------------------------------------------------

def _count(records, split: str | None, verdict: str) -> int:
    return sum(1 for record in records if record.split == split and record.anomalous == VERDICTS[verdict])


def _check_minimums(dataset: Dataset) -> None:
    if dataset.split:
        needed = MIN_SPLIT
        rule = "a split dataset needs at least 10 normal training images and 10 normal + 10 anomalous test images"
    else:
        needed = {(None, verdict): count for verdict, count in MIN_SINGLE.items()}
        rule = "a dataset without a test split needs at least 20 normal and 10 anomalous images"
    for (split, verdict), minimum in needed.items():
        found = _count(dataset.records, split, verdict)
        if found < minimum:
            place = f" in {split}" if split else ""
            raise _error(dataset.root, f"{found} {verdict} images{place}; {rule}")


def _naming(record: Record) -> str:
    """The record's place, with its image when the place (a manifest line) does not say it."""
    if record.where.endswith(Path(record.source).name):
        return record.where
    return f"{record.where}: {record.source}"


def _image_size(record: Record, reader: Reader) -> tuple[int, int]:
    """(height, width) of a record's image, after the file, format and side rules."""
    data, where = reader.read_bytes(record.source), _naming(record)
    if len(data) > MAX_BYTES:
        raise _error(where, f"is {len(data)} bytes; Lookout takes at most 8 MB per image")
    picture = _open(data, where, IMAGE_FORMATS)
    width, height = picture.size
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise _error(where, f"image is {width}x{height}; Lookout takes {MIN_SIDE}-{MAX_SIDE} pixels per side")
    try:
        picture.load()  # a truncated or corrupt file fails here, before any training
    except (OSError, ValueError, SyntaxError) as error:
        raise _error(where, f"cannot be decoded ({error})") from error
    return height, width


def _check_mask(record: Record, reader: Reader, size: tuple[int, int]) -> None:
    mask = _decode(reader.read_bytes(record.mask), f"{record.where}: mask {record.mask}", ("PNG",), "masks")  # colours must survive: PNG only
    if mask.shape[:2] != size:
        raise _error(record.where, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                                   f"{size[1]}x{size[0]}; a mask has its image's size")
    if not classes_present(mask, record.color_map, record.where):
        raise _error(record.where, "anomaly mask shows no anomaly class (only background)")


def check_rules(dataset: Dataset, reader: Reader, minimums: bool = True) -> tuple[int, int]:
    """Enforces Lookout's minimums and per-image rules; returns the images' (height, width).

    ``minimums=False`` leaves the counts to the caller, which checks them per role once it
    knows which images train and which test (a separate test dataset, say).
    """
    if minimums:
        _check_minimums(dataset)  # cheap, so before any image is read
    size, first = None, None
    for record in dataset.records:
        try:
            record_size = _image_size(record, reader)
            if record.mask is not None:
                _check_mask(record, reader, record_size)
        except LookoutError as error:
            if str(error).startswith(record.where):
                raise
            raise _error(record.where, str(error)) from error  # a reference error: say which line
        if size is None:
            size, first = record_size, record
        elif record_size != size:
            raise _error(record.where, f"image is {record_size[1]}x{record_size[0]} but {first.where} is "
                                       f"{size[1]}x{size[0]}; Lookout needs one image size per dataset")
    return size


def _packed(colors: numpy.ndarray) -> numpy.ndarray:
    # One integer per RGB triple, so colours compare with numpy.unique.
    colors = colors.astype(numpy.uint32)
    return (colors[..., 0] << 16) | (colors[..., 1] << 8) | colors[..., 2]


def classes_present(mask: numpy.ndarray, color_map: dict[str, str], where: str) -> tuple[str, ...]:
    """Classes (not the background) whose colour appears in the HxWx3 mask, in colour-map order."""
    seen = set(numpy.unique(_packed(mask[..., :3])).tolist())
    codes = {name: int(color.lstrip("#"), 16) for name, color in color_map.items()}
    strangers = seen - set(codes.values())
    if strangers:
        listed = ", ".join(f"#{code:06x}" for code in sorted(strangers)[:5])
        raise _error(where, f"mask colour(s) {listed} not in its colour map ({', '.join(color_map.values())})")
    background = next(iter(color_map))
    return tuple(name for name, code in codes.items() if name != background and code in seen)


def union_color_map(dataset: Dataset) -> dict[str, str]:
    """All records' colour maps merged in map order, background first."""
    union: dict[str, str] = {}
    for record in dataset.records:
        if not record.color_map:
            continue
        if union and next(iter(record.color_map.items())) != next(iter(union.items())):
            raise _error(record.where, f"background {next(iter(record.color_map.items()))} differs from "
                                       f"{next(iter(union.items()))} in an earlier colour map")
        for name, color in record.color_map.items():
            owner = next((known for known, known_color in union.items() if known_color == color), name)
            if union.get(name, color) != color:
                raise _error(record.where, f"class {name} is {color} here but {union[name]} in an earlier "
                                           "colour map; a class keeps one colour")
            if owner != name:
                raise _error(record.where, f"colour {color} is {name} here but {owner} in an earlier "
                                           "colour map; a colour names one class")
            union[name] = color
    return union


# ---- writing ------------------------------------------------------------------------------

def creation_date() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")


def write_manifest_line(source_ref: str, anomalous: bool, mask_ref: str | None = None,
                        color_map: dict[str, str] | None = None) -> dict:
    """One line in Lookout's format: ``anomaly-label`` 1 for anomaly, 0 for normal (AWS's cookie sample)."""
    class_name = "anomaly" if anomalous else "normal"
    line = {"source-ref": source_ref, "anomaly-label": int(anomalous),
            "anomaly-label-metadata": {"confidence": 1, "job-name": "labeling-job/anomaly-label",
                                       "class-name": class_name, "human-annotated": "yes",
                                       "creation-date": creation_date(), "type": CLASSIFICATION}}
    if mask_ref is None:
        return line
    if not anomalous or not color_map:
        raise LookoutError(f"{source_ref}: a mask needs an anomaly and a colour map (background first)")
    return {**line, **mask_attributes(mask_ref, color_map)}


def mask_attributes(mask_ref: str, color_map: dict[str, str]) -> dict:
    """A line's mask and its colour map (background first), as Ground Truth's segmentation jobs write them."""
    return {MASK_ATTRIBUTE: mask_ref, f"{MASK_ATTRIBUTE}-metadata": {
        "internal-color-map": {str(index): {"class-name": name, "hex-color": color, "confidence": 0.0}
                               for index, (name, color) in enumerate(color_map.items())},
        "type": SEGMENTATION, "human-annotated": "yes", "creation-date": creation_date(),
        "job-name": "labeling-job/anomaly-mask"}}
