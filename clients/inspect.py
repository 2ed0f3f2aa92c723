"""Inspect board photos with ``defect_inspection``: verdict, missing components, confidence.

    python -m clients.inspect board.jpg [more.png ...] --url 127.0.0.1:8000 --protocol http-binary
    python -m clients.inspect board.jpg --protocol sagemaker-binary --url http://127.0.0.1:8080

One request per image, so that a corrupt file gets its own error and the others are
still inspected. Component names come from the server (Triton's classification
extension reading the model's label file).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from builders import defect_inspection as pipeline
from builders.defect_architecture import CLASSES
from builders.defect_router import LABEL, LOW_CONFIDENCE
from builders.defect_parent import ANOMALY_SCORE
from builders.defect_child import MISSING_SCORES
from clients.classify import encoded_batch
from clients.protocols import RequestError, Route, add_route_arguments, infer, route_from_arguments


@dataclass(frozen=True)
class Inspection:
    label: str  # "normal" or "anomaly"
    anomaly_score: float
    missing: dict[str, float]  # component -> probability that it is missing (all 0 for normals)
    low_confidence: bool

    def missing_components(self, threshold: float = 0.5) -> list[str]:
        return [name for name, score in self.missing.items() if score >= threshold]


def inspect(route: Route, image: bytes) -> Inspection:
    outputs = infer(route, pipeline.NAME, {pipeline.INPUT.name: encoded_batch([image])},
                    [ANOMALY_SCORE.name, LABEL.name, MISSING_SCORES.name, LOW_CONFIDENCE.name],
                    class_count={MISSING_SCORES.name: len(CLASSES)})
    ranked = [entry.decode() if isinstance(entry, bytes) else entry for entry in outputs[MISSING_SCORES.name][0]]
    missing = {label: float(score) for score, _, label in (entry.split(":", 2) for entry in ranked)}
    label = outputs[LABEL.name][0][0]
    return Inspection(label.decode() if isinstance(label, bytes) else str(label),
                      float(outputs[ANOMALY_SCORE.name][0][0]), missing, bool(outputs[LOW_CONFIDENCE.name][0][0]))


def describe(result: Inspection) -> str:
    text = f"{result.label} (anomaly score {result.anomaly_score:.3f})"
    if result.label == "anomaly":
        parts = result.missing_components()
        text += "; missing: " + (", ".join(f"{name} ({result.missing[name]:.2f})" for name in parts)
                                 if parts else "no component over 0.5")
    if result.low_confidence:
        text += "; LOW CONFIDENCE: unlike the training boards, or the score is near the threshold"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.inspect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path)
    add_route_arguments(parser)
    args = parser.parse_args(argv)
    route = route_from_arguments(parser, args)
    failed = 0
    for path in args.images:
        try:
            print(f"{path}: {describe(inspect(route, path.read_bytes()))}")
        except (RequestError, OSError) as error:
            print(f"{path}: error: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
