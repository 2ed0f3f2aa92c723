"""One command from a product's labelled photo to a train/test dataset of normals and synthetic anomalies.

    python -m defect_data.pipeline --product knob --out build/dataset [--lama-weights build/products/knob/lama.pt]
        [--protocol http-binary --url 127.0.0.1:8000] [--s3 s3://bucket/prefix]

The product (``python -m products define``) names its labelled photo (a Ground Truth
output manifest) and its classes. Normals: the augmentations, alternately to train and
test. Anomalies: components removed by LaMa, then a photometric augmentation; LaMa is
the product's own checkpoint in-process (``--lama-weights``, from
``defect_data.train_lama``) or ``ensemble_lama`` on the given server (local, or a
SageMaker endpoint through the same clients). Every file is written under a
temporary name and renamed, and a rerun skips the files that exist, so an interrupted
run resumes; manifests are written last and list only images that exist. With ``--s3``
the dataset is uploaded and the manifests reference ``s3://`` URLs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import Progress

from clients.protocols import RequestError, add_route_arguments, route_from_arguments
from defect_data import augment, defects, groundtruth, manifests
from products import DEFAULT_STORE, Product, ProductError, find

SPLITS = ("train", "test")


class PipelineInterrupted(RuntimeError):
    """The run stopped part-way; what was finished is kept and a rerun resumes."""


@dataclass(frozen=True)
class Settings:
    per_class: int = 20  # defects of each class in each split
    normals_per_kind: int = 10  # 4 kinds: 40 normals, 20 per split
    seed: int = 0


def _save(path: Path, array: np.ndarray) -> None:
    """Whole file or none: a crash leaves at most a .partial, never a truncated image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial" + path.suffix)  # the suffix tells Pillow the format
    Image.fromarray(array).save(partial, **({"quality": 95} if path.suffix == ".jpg" else {}))
    partial.replace(path)


def _write_text(path: Path, text: str) -> None:
    """Whole file or none: an interrupted write leaves the previous file and no .partial behind."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def tasks(labelled: groundtruth.Labelled, settings: Settings) -> list[tuple[str, str, tuple[str, ...]]]:
    """(split, file name, removed classes) for every image; normals remove nothing."""
    stems = augment.normal_stems(settings.normals_per_kind)
    planned = [(SPLITS[number % 2], f"normal/{stem}.jpg", ()) for number, (stem, _, _) in enumerate(stems)]
    classes = [name for name in labelled.color_map][1:]
    for split in SPLITS:
        for index, removed in enumerate(defects.plan(classes, split, settings.per_class, settings.seed)):
            planned.append((split, f"anomaly/{defects.file_name(index, removed)}", removed))
    return planned


def produce(out: Path, fill: defects.Inpainter, labelled: groundtruth.Labelled, masks: dict[str, np.ndarray],
            task: tuple[str, str, tuple[str, ...]], settings: Settings) -> None:
    split, name, removed = task
    stem = Path(name).stem
    if not removed:
        kind, index = stem.removeprefix("normal_").rsplit("_", 1)
        _save(out / split / name, augment.augment(labelled.image, kind, int(index), settings.seed))
        return
    number = int(stem.split("_", 1)[0])
    kind = augment.KINDS[number % len(augment.KINDS)]
    inpainted = defects.remove(fill, labelled.image, masks, removed)
    _save(out / split / "masks" / f"{stem}.png", defects.anomaly_mask(masks, removed, labelled.color_map))
    # Train and test may remove the same classes at the same index: their variants must differ.
    variant = number + 1000 * SPLITS.index(split)
    _save(out / split / name, augment.augment(inpainted, kind, variant, settings.seed + 1, geometric=False))


def build(out: Path, fill: defects.Inpainter, labelled: groundtruth.Labelled, settings: Settings) -> dict[str, int]:
    """Produce every missing image; returns how many were made now and how many exist."""
    masks = groundtruth.class_masks(labelled)
    planned = tasks(labelled, settings)
    made = 0
    with Progress() as progress:
        bar = progress.add_task("building the dataset", total=len(planned))
        for task in planned:
            if not (out / task[0] / task[1]).exists():
                try:
                    produce(out, fill, labelled, masks, task, settings)
                except RequestError as error:
                    done = sum((out / split / name).exists() for split, name, _ in planned)
                    raise PipelineInterrupted(f"the inpainting server failed: {error}\n{done} of {len(planned)} "
                                              "images are finished and kept; rerun the same command to resume") from None
                made += 1
            progress.advance(bar)
    return {"made": made, "planned": len(planned)}


def write_manifests(out: Path, labelled: groundtruth.Labelled, settings: Settings, base: str) -> dict[str, Path]:
    """train.manifest and test.manifest over the images that exist, referenced from ``base``."""
    written = {}
    for split in SPLITS:
        lines = []
        for split_of, name, removed in tasks(labelled, settings):
            if split_of != split or not (out / split / name).exists():
                continue
            reference = manifests.reference(base, split, name)
            if removed:
                mask = manifests.reference(base, split, f"masks/{Path(name).stem}.png")
                colours = {key: labelled.color_map[key] for key in [next(iter(labelled.color_map)), *removed]}
                lines.append(manifests.anomaly_line(reference, mask, colours))
            else:
                lines.append(manifests.image_line(reference, "normal"))
        written[split] = manifests.write(out / f"{split}.manifest", lines)
    return written


def version_record(out: Path, labelled: groundtruth.Labelled, settings: Settings) -> dict:
    """Hashes of the inputs and parameters, and the counts: the same inputs give the same version."""
    inputs = hashlib.sha256()
    for part in (labelled.image, labelled.mask):
        inputs.update(np.ascontiguousarray(part).tobytes())
    inputs.update(json.dumps(labelled.color_map, sort_keys=True).encode())
    parameters = asdict(settings)
    counts = {split: {kind: sum(1 for _ in (out / split / kind).glob("*.jpg")) for kind in ("normal", "anomaly")}
              for split in SPLITS}
    version = hashlib.sha256(f"{inputs.hexdigest()}{json.dumps(parameters, sort_keys=True)}".encode()).hexdigest()
    record = {"version": version[:16], "inputs_sha256": inputs.hexdigest(), "parameters": parameters,
              "counts": counts}
    _write_text(out / "dataset_version.json", json.dumps(record, indent=2) + "\n")
    return record


def upload(out: Path, s3_prefix: str, region: str | None) -> int:
    """Every file of the dataset to s3://bucket/prefix/..., manifests last."""
    from sagemaker_deploy.aws import Aws

    aws = Aws(region, say=lambda line: None)
    bucket, _, prefix = s3_prefix.removeprefix("s3://").partition("/")
    files = sorted(p for p in out.rglob("*") if p.is_file() and ".partial" not in p.name)
    files.sort(key=lambda path: path.suffix == ".manifest")
    for path in files:
        aws.call("s3", "upload_file", Filename=str(path), Bucket=bucket,
                 Key=f"{prefix.strip('/')}/{path.relative_to(out)}".lstrip("/"))
    return len(files)


def labels(product: Product) -> groundtruth.Labelled:
    """The product's labelled photo; its colour map must still be the product's."""
    if not product.labels:
        raise ProductError(f"product {product.name} was not defined from a labelled photo (python -m products "
                           "define --labels): there is nothing to remove components from")
    labelled = groundtruth.read(Path(product.labels))
    if labelled.color_map != product.color_map:
        raise ProductError(f"{product.labels} now has classes {', '.join(labelled.color_map)}, not the product "
                           f"{product.name}'s {', '.join(product.color_map)}; define the product again")
    return labelled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m defect_data.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--product", required=True, help="the product's name in --products-store, or its product.json")
    parser.add_argument("--products-store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--out", type=Path, default=Path("build/dataset"))
    parser.add_argument("--lama-weights", type=Path,
                        help="remove components in-process with this LaMa checkpoint (default: the served ensemble_lama)")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--normals-per-kind", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--s3", default="", help="s3://bucket/prefix: upload, and reference files from there")
    add_route_arguments(parser)
    args = parser.parse_args(argv)
    settings = Settings(args.per_class, args.normals_per_kind, args.seed)
    from builders.declaration import WeightsError
    from sagemaker_deploy.aws import AwsError

    try:
        labelled = labels(find(args.product, args.products_store))
        fill = defects.in_process(args.lama_weights) if args.lama_weights else \
            defects.served(route_from_arguments(parser, args))
        counts = build(args.out, fill, labelled, settings)
        base = args.s3.rstrip("/") if args.s3 else str(args.out.resolve())
        written = write_manifests(args.out, labelled, settings, base)
        record = version_record(args.out, labelled, settings)
        uploaded = upload(args.out, args.s3, args.region) if args.s3 else 0
    except (groundtruth.LabelError, ProductError, WeightsError, PipelineInterrupted, AwsError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{counts['made']} images made now, {counts['planned']} in the dataset {args.out} "
          f"(version {record['version']}): {json.dumps(record['counts'])}")
    print("manifests: " + ", ".join(str(path) for path in written.values()))
    if uploaded:
        print(f"uploaded {uploaded} files to {args.s3}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
