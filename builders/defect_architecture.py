"""The small CNNs of defect inspection, and what a product's ``parent`` and ``child`` share.

Why this network: five stride-2 convolutions (16 to 96 channels) turn the product's input
size (its ``product.json``; 240x320 for the sample board) into a map 32 times smaller.
What reads that map depends on the product's ``layout``:

* ``fixed`` (a product photographed in one pose, whose parts sit in fixed places): the
  head reads the map flattened, so it knows *where* a feature is: two identical parts
  differ only by position, and "which part is missing" is a question about places.
* ``anywhere`` (surfaces whose defects can be anywhere, such as the photos of a Lookout
  dataset): a 1x1 convolution scores every place of the map and the image takes its
  highest place score. The same few weights judge every place, so a crack learned in one
  corner is known in the others, and a few dozen photos are enough to train it.

About 0.15 GFLOP per 320x240 image: a pair trains on a 2-core CPU in minutes.

The parent also answers "is this the product at all": ``novelty`` is the distance of the
image's pooled features to the nearest class centre seen in training, in units of the
largest distance seen on training and validation images (so the product scores <= 1).

Thresholds travel with the model, as anomalib's post-processor does: the decision
threshold chosen on validation is folded into the exported scores (a shift in logit
space), so a served score >= 0.5 means "over the version's own threshold", and the
threshold itself is recorded in the version's evaluation report.
"""
from __future__ import annotations

import logging
from pathlib import Path

from builders.declaration import BuildOptions, ModelDeclaration, Serving, Tensor
from products import Product
from products.definition import LAYOUTS

LOG = logging.getLogger(__name__)
CHANNELS = (16, 32, 48, 64, 96)
MAX_BATCH_SIZE = 16
ONNX_OPSET = 17
NOVELTY_MARGIN = 1.5  # images seen in training reach at most 1 / NOVELTY_MARGIN
IMAGE_NAME = "IMAGE"
FIXED, ANYWHERE = LAYOUTS


def image_tensor(product: Product) -> Tensor:
    """RGB scaled to [-1, 1], channels first, at the product's input size."""
    return Tensor(IMAGE_NAME, "TYPE_FP32", (3, product.height, product.width))


def network(outputs: int, height: int, width: int, layout: str = FIXED):
    """A fresh CNN: [N, 3, height, width] -> (logits [N, outputs], pooled features [N, 96])."""
    import torch
    from torch import nn

    class HighestPlace(nn.Module):
        """Per place logits [N, outputs, h, w] -> the highest per output [N, outputs]."""
        def forward(self, places: torch.Tensor):
            return places.amax(dim=(2, 3))

    class SmallCnn(nn.Module):
        def __init__(self):
            super().__init__()
            layers, channels_in = [], 3
            for channels_out in CHANNELS:
                layers += [nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1, bias=False),
                           nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True)]
                channels_in = channels_out
            self.features = nn.Sequential(*layers)
            if layout == FIXED:
                self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3),
                                          nn.Linear(CHANNELS[-1] * _reduced(height) * _reduced(width), outputs))
            elif layout == ANYWHERE:
                self.head = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(CHANNELS[-1], outputs, 1), HighestPlace())
            else:
                raise ValueError(f"unknown layout {layout!r}: one of {', '.join(LAYOUTS)}")

        def forward(self, image: torch.Tensor):
            features = self.features(image)
            return self.head(features), features.mean(dim=(2, 3))

    return SmallCnn()


SEGMENTATION_CHANNELS = (16, 32, 64, 96)


def segmentation_network(classes: int, layout: str = FIXED):
    """A small U-Net: [N, 3, H, W] -> per pixel logits [N, classes, H, W] (class 0 background).

    Four stride-2 stages down, and back up to half the input size with each stage's features
    joined in (the skips carry the detail a mask's edges need); the half-size logits are
    scaled up bilinearly, which keeps the edges and saves the full-size stage, the dearest
    one. No pretrained features exist here, and a network this size trains on a 2-core CPU
    in minutes. Where parts sit in fixed places (``layout`` ``fixed``), two coordinate
    planes are added to the input (CoordConv, Liu et al. 2018): which of two identical
    parts is missing is a question about where it is.
    """
    import torch
    from torch import nn
    from torch.nn import functional

    def block(channels_in: int, channels_out: int, stride: int = 1):
        return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False),
                             nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True))

    def coordinates(image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[2:]
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        return torch.stack([ys, xs])[None].expand(image.shape[0], -1, -1, -1)

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: one of {', '.join(LAYOUTS)}")
    positional = layout == FIXED

    class SmallUNet(nn.Module):
        def __init__(self):
            super().__init__()
            widths = (3 + 2 * positional, *SEGMENTATION_CHANNELS)
            self.down = nn.ModuleList(nn.Sequential(block(widths[i], widths[i + 1], 2), block(widths[i + 1], widths[i + 1]))
                                      for i in range(len(SEGMENTATION_CHANNELS)))
            self.up = nn.ModuleList(block(widths[i + 1] + widths[i], widths[i])
                                    for i in reversed(range(1, len(SEGMENTATION_CHANNELS))))
            self.classify = nn.Conv2d(SEGMENTATION_CHANNELS[0], classes, 1)

        def forward(self, image: torch.Tensor):
            features = torch.cat([image, coordinates(image)], dim=1) if positional else image
            skips = []
            for stage in self.down:
                features = stage(features)
                skips.append(features)
            for stage, skip in zip(self.up, reversed(skips[:-1])):
                features = functional.interpolate(features, size=skip.shape[2:], mode="bilinear", align_corners=False)
                features = stage(torch.cat([features, skip], dim=1))
            return functional.interpolate(self.classify(features), size=image.shape[2:], mode="bilinear",
                                          align_corners=False)

    return SmallUNet()


def segmenter_module(network):
    """The served segmenter: the class of the highest logit per pixel, UINT8 [N, H, W]."""
    import torch
    from torch import nn

    class Segmenter(nn.Module):
        def __init__(self):
            super().__init__()
            self.network = network

        def forward(self, image: torch.Tensor):
            return self.network(image).argmax(dim=1).to(torch.uint8)

    return Segmenter().eval()


def _reduced(size: int) -> int:
    for _ in CHANNELS:
        size = (size + 1) // 2
    return size


def logit(probability):
    """The logit of a threshold in (0, 1), kept finite."""
    import numpy as np

    p = np.clip(np.asarray(probability, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


def parent_module(cnn, feature_mean, feature_std, centres, scale, threshold=0.5):
    """The served parent: (anomaly score [N, 1], novelty [N, 1]); 0.5 is the version's threshold."""
    import torch
    from torch import nn

    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn = cnn
            for name, value in {"feature_mean": feature_mean, "feature_std": feature_std, "centres": centres,
                                "scale": scale, "threshold_logit": logit(threshold)}.items():
                self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32))

        def forward(self, image: torch.Tensor):
            logits, features = self.cnn(image)
            standard = (features - self.feature_mean) / self.feature_std
            distances = torch.cdist(standard, self.centres).min(dim=1, keepdim=True).values
            return torch.sigmoid(logits - self.threshold_logit), distances / self.scale

    return Parent().eval()


def child_module(cnn, thresholds=0.5):
    """The served child: per class, a score >= 0.5 when that class is found [N, classes]."""
    import torch
    from torch import nn

    class Child(nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn = cnn
            self.register_buffer("threshold_logit", torch.as_tensor(logit(thresholds), dtype=torch.float32))

        def forward(self, image: torch.Tensor):
            return torch.sigmoid(self.cnn(image)[0] - self.threshold_logit)

    return Child().eval()


def export_onnx(module, path: Path, image: Tensor, output_names: list[str]) -> Path:
    """Trace to ONNX with a dynamic batch axis; written whole or not at all."""
    import torch

    partial = path.with_name(path.name + ".partial")
    example = torch.zeros(2, *image.dims)
    with torch.no_grad():
        torch.onnx.export(module, (example,), str(partial), input_names=[image.name], output_names=output_names,
                          dynamic_axes={name: {0: "batch"} for name in [image.name, *output_names]},
                          opset_version=ONNX_OPSET, dynamo=False)
    partial.replace(path)
    return path


def untrained(name: str, module_for, image: Tensor, output_names: list[str]):
    """The export of version 1 before any training run: seeded random weights, said loudly."""
    def export(version_dir: Path, options: BuildOptions) -> dict[str, bytes]:
        import torch

        torch.manual_seed(options.seed)
        LOG.warning("\n%s\n!! %s version 1: UNTRAINED (random weights, seed %d); its verdicts are meaningless.\n"
                    "!! Train and promote a version: python -m defect_classifier train / approve\n%s",
                    "!" * 72, name, options.seed, "!" * 72)
        export_onnx(module_for(), version_dir / "model.onnx", image, output_names)
        return {}

    return export


def declare_classifier(name: str, image: Tensor, outputs: list[Tensor], export, description: str,
                       model_files: dict[str, bytes] | None = None) -> ModelDeclaration:
    """A defect classifier: ONNX on onnxruntime (gpu) or in the python-backend ONNX runner (cpu).

    Serving follows ``version_policy`` (version 1 until a trained version is approved);
    training runs add numbered versions beside it (see ``model_versions.local``).
    """
    return ModelDeclaration(
        name=name, inputs=[image], outputs=outputs, max_batch_size=MAX_BATCH_SIZE,
        serving={"gpu": Serving(platform="onnxruntime_onnx", instance_kind="KIND_GPU"),
                 "cpu": Serving(backend="python", instance_kind="KIND_CPU", runner="onnx_runner")},
        artifact="model.onnx", dynamic_batching_delay_us=500, export=export, served_version=1,
        parameters={"description": description}, model_files=model_files or {})
