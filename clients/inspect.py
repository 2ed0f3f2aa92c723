"""Inspect photos of a product with its pipeline ``<product>_inspection``: verdict, where the defects are, confidence.

    python -m clients.inspect --product pcb board.jpg [more.png ...] --url 127.0.0.1:8000 --protocol http-binary
    python -m clients.inspect --product pcb board.jpg --protocol sagemaker-binary --url http://127.0.0.1:8080
    python -m clients.inspect --product pcb board.jpg --format lookout --mask-out masks/

The answer is Lookout for Vision's (DetectAnomalies): ``--format lookout`` prints its
JSON, one line per image, as Lookout's REST API sends it (the mask PNG in base64);
``--mask-out DIR`` saves each image's colour mask as ``DIR/<image name>.png``.

One request per image, so that a corrupt file gets its own error and the others are
still inspected. Class names come from the server (Triton's classification extension
reading the model's label file), so they are the product's own.
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from builders import defect_inspection as pipeline
from builders.defect_child import SCORES_NAME
from builders.defect_parent import ANOMALY_SCORE
from builders.defect_router import LABEL, LOOKOUT, LOW_CONFIDENCE
from clients.classify import encoded_batch
from clients.protocols import (RequestError, Route, add_route_arguments, exit_status, failure_line, infer,
                              route_from_arguments)


MAX_CLASSES = 256  # top-k of the class scores: every class (Triton returns at most as many as there are)


@dataclass(frozen=True)
class Inspection:
    label: str  # "normal" or "anomaly"
    anomaly_score: float
    missing: dict[str, float]  # class -> score, >= 0.5 when found (all 0 for normals; a missing part, a crack)
    low_confidence: bool
    lookout: dict  # Lookout's DetectAnomalies response: {"DetectAnomalyResult": {...}}

    @property
    def found(self) -> list[dict]:
        """Lookout's anomalies past its background entry: name and share of the image."""
        return self.lookout["DetectAnomalyResult"].get("Anomalies", [])[1:]

    @property
    def mask_png(self) -> bytes | None:
        mask = self.lookout["DetectAnomalyResult"].get("AnomalyMask")
        return base64.b64decode(mask) if mask else None

    def missing_components(self, threshold: float = 0.5) -> list[str]:
        return [name for name, score in self.missing.items() if score >= threshold]


def inspect(route: Route, product: str, image: bytes, classes: bool = True) -> Inspection:
    """``classes=False`` for a product without classes (its pipeline has no class scores)."""
    scores = [SCORES_NAME] if classes else []
    outputs = infer(route, f"{product}_{pipeline.ROLE}", {pipeline.INPUT.name: encoded_batch([image])},
                    [ANOMALY_SCORE.name, LABEL.name, *scores, LOW_CONFIDENCE.name, LOOKOUT.name],
                    class_count={SCORES_NAME: MAX_CLASSES})
    ranked = [entry.decode() if isinstance(entry, bytes) else entry for entry in
              (outputs[SCORES_NAME][0] if classes else [])]
    missing = {label: float(score) for score, _, label in (entry.split(":", 2) for entry in ranked)}
    label = outputs[LABEL.name][0][0]
    return Inspection(label.decode() if isinstance(label, bytes) else str(label),
                      float(outputs[ANOMALY_SCORE.name][0][0]), missing, bool(outputs[LOW_CONFIDENCE.name][0][0]),
                      json.loads(outputs[LOOKOUT.name][0][0]))


def describe(result: Inspection) -> str:
    text = f"{result.label} (anomaly score {result.anomaly_score:.3f})"
    if result.label == "anomaly":
        parts = result.missing_components()
        text += "; found: " + (", ".join(f"{name} ({result.missing[name]:.2f})" for name in parts)
                               if parts else "no class over 0.5")
    if result.found:
        text += "; where: " + ", ".join(f"{entry['Name']} {entry['PixelAnomaly']['TotalPercentageArea']:.1%} of the "
                                        f"image ({entry['PixelAnomaly']['Color']})" for entry in result.found)
    if result.low_confidence:
        text += "; LOW CONFIDENCE: unlike the training images, or the score is near the threshold"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.inspect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--product", required=True, help="the product whose pipeline inspects the images")
    parser.add_argument("--no-classes", action="store_true", help="the product has no classes (verdict only)")
    parser.add_argument("--format", choices=("text", "lookout"), default="text",
                        help="lookout: Lookout for Vision's DetectAnomalies JSON, one line per image")
    parser.add_argument("--mask-out", type=Path, help="save each image's colour mask here as <image name>.png")
    add_route_arguments(parser)
    args = parser.parse_args(argv)
    route = route_from_arguments(parser, args)
    errors = []
    for path in args.images:
        try:
            result = inspect(route, args.product, path.read_bytes(), not args.no_classes)
            print(json.dumps(result.lookout) if args.format == "lookout" else f"{path}: {describe(result)}")
            if args.mask_out and result.mask_png:
                args.mask_out.mkdir(parents=True, exist_ok=True)
                (args.mask_out / f"{path.stem}.png").write_bytes(result.mask_png)
        except (RequestError, OSError) as error:
            print(f"{path}: {failure_line(error)}", file=sys.stderr)
            errors.append(error)
    return exit_status(errors)


if __name__ == "__main__":
    sys.exit(main())
