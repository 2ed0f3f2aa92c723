"""The routing of a product's router, shared by the served step and the in-process reference."""
import numpy as np

LABELS = (b"normal", b"anomaly")


class Thresholds:
    """From the router's config parameters (all strings)."""

    def __init__(self, parameters):
        self.anomaly = float(parameters["anomaly_threshold"])
        self.uncertain = float(parameters["uncertain_margin"])
        self.novelty = float(parameters["novelty_threshold"])
        self.min_side = int(parameters["min_side"])


def too_small(shapes, min_side):
    """Messages for the images (rows of height, width, channels) under ``min_side`` pixels."""
    return [f"image {row} is {int(shape[1])}x{int(shape[0])} pixels; defect inspection needs at least "
            f"{min_side}x{min_side}" for row, shape in enumerate(shapes) if min(shape[0], shape[1]) < min_side]


def check_sizes(shapes, min_side):
    """A ValueError naming every image under ``min_side`` pixels."""
    problems = too_small(shapes, min_side)
    if problems:
        raise ValueError("; ".join(problems))


def inspect(images, shapes, thresholds, classes, parent, child):
    """(anomaly scores [N, 1], labels [N, 1] bytes, class scores [N, classes] or None, low confidence [N, 1]).

    ``parent(images) -> (scores [N, 1], novelty [N, 1])`` runs on every image,
    ``child(images) -> class scores`` only on those the parent calls anomalies (never
    when the product has no classes: then the third item is None); the others get zeros.
    Low confidence: unlike the training images (novelty), or a score near the threshold.
    A ValueError names images too small to inspect.
    """
    check_sizes(shapes, thresholds.min_side)
    scores, novelty = (np.asarray(v, np.float32).reshape(-1, 1) for v in parent(images))
    routed = scores[:, 0] >= thresholds.anomaly
    found = None
    if classes:
        found = np.zeros((len(images), classes), np.float32)
        if routed.any():
            found[routed] = child(images[routed])
    labels = np.array([[LABELS[int(flag)]] for flag in routed], dtype=object)
    low_confidence = (novelty > thresholds.novelty) | (np.abs(scores - thresholds.anomaly) < thresholds.uncertain)
    return scores, labels, found, low_confidence


def present(outputs):
    """The outputs a product declares: the class scores only where it has classes."""
    return [values for values in outputs if values is not None]
