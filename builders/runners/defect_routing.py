"""The decision of a product's router, shared by the served step and the in-process reference.

The inputs are what the product's models answered for every image (the parent's score and
novelty; the child's class scores and the segmenter's class per pixel, for a product with
classes); the outputs are the router's, in its config's order (builders/defect_router.py).
Where the defect is: the class mask at the photo's own size, its PNG in the product's colours,
and Lookout for Vision's DetectAnomalies answer (its API reference, ``DetectAnomalyResult``):
``Source`` ``{"Type": "direct"}``, ``IsAnomalous``, ``Confidence`` and, for a segmentation
model, ``Anomalies`` (background first, named ``background``; one entry per class found,
each ``Name`` and ``PixelAnomaly`` ``{"TotalPercentageArea": share 0..1, "Color": "#rrggbb"}``)
and ``AnomalyMask``, the PNG bytes, base64 in JSON as the REST API sends it (boto3 decodes
it back to bytes).
"""
import base64
import io
import json

import numpy as np
from PIL import Image

LABELS = (b"normal", b"anomaly")
BACKGROUND = "background"  # Lookout's own name for the first entry, whatever the dataset calls it
PNG_COMPRESS_LEVEL = 1  # a mask is flat colour: the fastest level is small already


class Rules:
    """The thresholds and Lookout's decision rules, from the router's config parameters (all strings)."""

    def __init__(self, parameters):
        self.anomaly = float(parameters["anomaly_threshold"])
        self.uncertain = float(parameters["uncertain_margin"])
        self.novelty = float(parameters["novelty_threshold"])
        self.min_side = int(parameters["min_side"])
        self.min_confidence = float(parameters["min_confidence"])
        self.color_map = json.loads(parameters["color_map"])  # class -> "#rrggbb", background first
        self.min_area = self._min_area(json.loads(parameters["min_area"]))

    def _min_area(self, shares):
        """Per class index (background's 0 included) the least share of the image a class must cover."""
        classes = list(self.color_map)[1:]
        unknown = sorted(set(shares) - set(classes))
        if unknown:
            raise ValueError(f"min_area names {', '.join(unknown)}, not classes of the product: {', '.join(classes)}")
        return np.array([0.0, *(float(shares.get(name, 0.0)) for name in classes)])


def too_small(shapes, min_side):
    """Messages for the images (rows of height, width, channels) under ``min_side`` pixels."""
    return [f"image {row} is {int(shape[1])}x{int(shape[0])} pixels; defect inspection needs at least "
            f"{min_side}x{min_side}" for row, shape in enumerate(shapes) if min(shape[0], shape[1]) < min_side]


def check_sizes(shapes, min_side):
    """A ValueError naming every image under ``min_side`` pixels."""
    problems = too_small(shapes, min_side)
    if problems:
        raise ValueError("; ".join(problems))


def verdicts(scores, novelty, rules):
    """(anomalous [N] bool, Lookout's Confidence [N], low confidence [N, 1]) from the parent's answers."""
    scores, novelty = (np.asarray(v, np.float32).reshape(-1, 1) for v in (scores, novelty))
    over = scores[:, 0] >= rules.anomaly
    confidence = np.where(over, scores[:, 0], 1.0 - scores[:, 0])
    anomalous = over & (confidence >= rules.min_confidence)
    low_confidence = (novelty > rules.novelty) | (np.abs(scores - rules.anomaly) < rules.uncertain)
    return anomalous, confidence, low_confidence


def where_found(shape, anomalous, pixel_classes, rules):
    """(class index mask at the photo's size, shares per class): all background unless anomalous; a class
    under its ``min_area`` is painted background."""
    mask = to_size(pixel_classes, int(shape[0]), int(shape[1])) if anomalous \
        else np.zeros((int(shape[0]), int(shape[1])), np.uint8)
    shares = pixel_shares(mask, len(rules.color_map))
    dropped = np.flatnonzero((shares > 0) & (shares < rules.min_area))
    if dropped.size:
        mask = np.where(np.isin(mask, dropped), np.uint8(0), mask)
        shares = pixel_shares(mask, len(rules.color_map))
    return mask, shares


def decide(rules, shapes, scores, novelty, class_scores=None, pixel_classes=None):
    """The router's outputs, in its config's order, for a batch (a product without classes: no class scores,
    no pixel classes). A ValueError names images too small to inspect."""
    check_sizes(shapes, rules.min_side)
    anomalous, confidence, low_confidence = verdicts(scores, novelty, rules)
    labels = np.array([[LABELS[int(flag)]] for flag in anomalous], dtype=object)
    parent_scores = np.asarray(scores, np.float32).reshape(-1, 1)
    if class_scores is None:
        answers = [[lookout_answer(bool(flag), float(conf))] for flag, conf in zip(anomalous, confidence)]
        return [parent_scores, labels, low_confidence, np.array(answers, dtype=object)]
    found = np.where(anomalous[:, None], np.asarray(class_scores, np.float32), np.float32(0))
    masks, pngs, shares, answers = zip(*(segmentation(rules, *image) for image in
                                         zip(shapes, anomalous, confidence, pixel_classes)))
    return [parent_scores, labels, low_confidence, list(answers), found, list(masks), list(pngs), list(shares)]


def segmentation(rules, shape, anomalous, confidence, pixel_classes):
    """One image's (mask, PNG [1], shares, Lookout answer [1])."""
    mask, shares = where_found(shape, anomalous, pixel_classes, rules)
    png = mask_png(mask, list(rules.color_map.values()))
    answer = lookout_answer(bool(anomalous), float(confidence), rules.color_map, shares, png)
    return mask, np.array([png], dtype=object), shares.astype(np.float32), np.array([answer], dtype=object)


def to_size(pixel_classes, height, width):
    """The class mask (model size) at ``height`` x ``width``, nearest neighbour, pixel centres aligned."""
    rows = _nearest(pixel_classes.shape[0], height)
    columns = _nearest(pixel_classes.shape[1], width)
    return np.ascontiguousarray(pixel_classes[rows[:, None], columns[None, :]])


def _nearest(source, target):
    return np.minimum(((np.arange(target) + 0.5) * source / target).astype(np.int64), source - 1)


def pixel_shares(mask, classes):
    """Share of the mask's pixels per class index 0..classes-1 (background first)."""
    return np.bincount(mask.ravel(), minlength=classes)[:classes] / mask.size


def mask_png(mask, colors):
    """The mask as a palette PNG in ``colors`` ("#rrggbb" per class index, background first)."""
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).tobytes())
    image.putpalette([int(color[i:i + 2], 16) for color in colors for i in (1, 3, 5)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def anomalies(color_map, shares):
    """Lookout's ``Anomalies``: background, then each class that covers any of the image."""
    entries = []
    for index, (name, color) in enumerate(color_map.items()):
        if index == 0 or shares[index] > 0:
            entries.append({"Name": BACKGROUND if index == 0 else name,
                            "PixelAnomaly": {"TotalPercentageArea": float(shares[index]), "Color": color}})
    return entries


def lookout_answer(is_anomalous, confidence, color_map=None, shares=None, png=None):
    """Lookout's DetectAnomalies response body as JSON bytes; segmentation fields only with a mask."""
    result = {"Source": {"Type": "direct"}, "IsAnomalous": is_anomalous, "Confidence": confidence}
    if png is not None:
        result["Anomalies"] = anomalies(color_map, shares)
        result["AnomalyMask"] = base64.b64encode(png).decode("ascii")
    return json.dumps({"DetectAnomalyResult": result}).encode()
