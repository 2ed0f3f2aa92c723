"""The segmenter's masks, training and pixel scores: where a defect is, and which class it is.

Masks are the dataset's Lookout ``anomaly-mask-ref`` colour PNGs: each colour is turned
into the product's class index (0 background, i the i-th class in colour-map order) and
the map is scaled to the product's size with nearest-neighbour, so that no pixel gets a
class in between. A normal image is all background. An anomaly without a mask says
nothing about its pixels: it is neither trained on nor scored, rather than being taken
for all background (which would teach the segmenter to miss defects).

The loss is cross-entropy plus the soft Dice loss of the defect classes (Milletari et
al., V-Net, 2016): defects cover a few per cent of an image, and Dice weighs each class by
its own area, so a segmenter that paints everything background is not a cheap optimum.
Scores are per pixel, over the exported ONNX model's answers: per class IoU, precision,
recall and F1, and their means.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from builders import defect_architecture as arch
from defect_classifier import data, training
from defect_data import lookout
from products import Product

DICE_SMOOTHING = 1.0  # pixels: keeps the Dice loss finite for a class absent from a batch


def class_indices(mask: np.ndarray, product: Product, where: str) -> np.ndarray:
    """An HxWx3 colour mask -> uint8 [H, W] class indices; DatasetError naming ``where`` for a colour
    that is not one of the product's."""
    packed = (mask[..., 0].astype(np.uint32) << 16) | (mask[..., 1].astype(np.uint32) << 8) | mask[..., 2]
    codes = np.array([int(color.lstrip("#"), 16) for color in product.color_map.values()], np.uint32)
    order = np.argsort(codes)
    position = np.clip(np.searchsorted(codes[order], packed), 0, len(codes) - 1)
    known = codes[order][position] == packed
    if not known.all():
        strangers = ", ".join(f"#{code:06x}" for code in np.unique(packed[~known])[:5])
        raise data.DatasetError(f"{where}: mask colour(s) {strangers} are not in the product {product.name}'s "
                                f"colour map ({', '.join(product.color_map.values())})")
    return order[position].astype(np.uint8)


def read_masks(examples: list[data.Example], product: Product, reader: lookout.Reader):
    """(masks uint8 [N, H, W] at the product's size, known [N] bool: the rows whose pixels are known)."""
    masks = np.zeros((len(examples), product.height, product.width), np.uint8)
    known = np.array([not e.anomaly or e.mask is not None for e in examples], bool)
    for row, example in enumerate(examples):
        if example.mask is not None:
            indices = class_indices(reader.image(example.mask), product, example.mask)
            masks[row] = np.asarray(Image.fromarray(indices).resize((product.width, product.height), Image.NEAREST))
    return masks, known


def _dice_loss(logits, target, classes: int):
    """1 - the mean soft Dice of the defect classes (background left out) over the batch."""
    import torch

    probabilities = torch.softmax(logits, dim=1)[:, 1:]
    truth = torch.nn.functional.one_hot(target, classes).permute(0, 3, 1, 2)[:, 1:].float()
    overlap = (probabilities * truth).sum(dim=(0, 2, 3))
    total = probabilities.sum(dim=(0, 2, 3)) + truth.sum(dim=(0, 2, 3))
    return 1 - ((2 * overlap + DICE_SMOOTHING) / (total + DICE_SMOOTHING)).mean()


def fit(images: np.ndarray, masks: np.ndarray, product: Product, settings: training.TrainSettings, on_step):
    """A fresh ``segmentation_network`` trained on images [N, 3, H, W] and their masks [N, H, W],
    image and mask moved together by the augmentation; ``on_step()`` after every optimizer step."""
    import torch

    classes = len(product.classes) + 1
    generator = training.seeded(settings)
    net = arch.segmentation_network(classes, product.layout)
    x, y = torch.from_numpy(images), torch.from_numpy(masks.astype(np.int64))

    def batch_loss(rows):
        batch, target = training.augment_with_masks(x[rows], y[rows], settings, generator)
        logits = net(batch)
        return torch.nn.functional.cross_entropy(logits, target) + _dice_loss(logits, target, classes)

    return training.optimise(net, len(x), settings, generator, batch_loss, on_step)


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def _mean(values) -> float | None:
    known = [value for value in values if value is not None]
    return float(np.mean(known)) if known else None


def report(truth: np.ndarray, predicted: np.ndarray, product: Product) -> dict:
    """Pixel scores of masks [N, H, W] (class indices): per label IoU, precision, recall, F1 and support
    (truth pixels); ``mean_iou`` and ``f1`` average the defect classes, ``*_with_background`` all labels.
    A class neither in the truth nor predicted has no IoU or F1 (None) and is left out of the means."""
    labels = ["background", *product.class_names]
    count = len(labels)
    confusion = np.bincount(np.asarray(truth, np.int64).reshape(-1) * count + np.asarray(predicted, np.int64).reshape(-1),
                            minlength=count * count).reshape(count, count)
    per_label = {}
    for index, name in enumerate(labels):
        hits, truths, found = confusion[index, index], confusion[index].sum(), confusion[:, index].sum()
        per_label[name] = {"iou": _ratio(hits, truths + found - hits), "precision": _ratio(hits, found) or 0.0,
                           "recall": _ratio(hits, truths) or 0.0, "f1": _ratio(2 * hits, truths + found),
                           "support": int(truths)}
    defects = [per_label[name] for name in product.class_names]
    return {"mean_iou": _mean(e["iou"] for e in defects), "f1": _mean(e["f1"] for e in defects) or 0.0,
            "mean_iou_with_background": _mean(e["iou"] for e in per_label.values()),
            "f1_with_background": _mean(e["f1"] for e in per_label.values()),
            "pixel_accuracy": _ratio(np.trace(confusion), confusion.sum()), "per_label": per_label,
            "count": len(truth), "confusion_labels": labels, "confusion": confusion.tolist()}
