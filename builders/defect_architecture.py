"""The two small CNNs of defect inspection, and what ``defect_parent`` and ``defect_child`` share.

Why this network: the product is one board photographed in one pose, so the question
"is a part missing, and which" is a question about fixed places in the picture. Five
stride-2 convolutions (16 to 96 channels) turn the 240x320 image into an 8x10 map, and
the head reads that map flattened, so it knows *where* a feature is: resistor1 and
resistor2 look the same and differ only by position. About 0.15 GFLOP per image: the
pair trains on a 2-core CPU in minutes.

The parent also answers "is this a board at all": ``novelty`` is the distance of the
image's pooled features to the nearest class centre seen in training, in units of the
largest distance seen on training and validation boards (so a board scores <= 1).
"""
from __future__ import annotations

import logging
from pathlib import Path

from builders.declaration import BuildOptions, ModelDeclaration, Serving, Tensor
from defect_data.pcb import COMPONENTS

LOG = logging.getLogger(__name__)
HEIGHT, WIDTH = 240, 320  # the sample board's size; every image is resized to it
CHANNELS = (16, 32, 48, 64, 96)
CLASSES = tuple(component.name for component in COMPONENTS)  # the child's labels, in colour-map order
IMAGE = Tensor("IMAGE", "TYPE_FP32", (3, HEIGHT, WIDTH))  # RGB scaled to [-1, 1]
MAX_BATCH_SIZE = 16
ONNX_OPSET = 17
NOVELTY_MARGIN = 1.5  # boards seen in training reach at most 1 / NOVELTY_MARGIN


def network(outputs: int):
    """A fresh CNN: [N, 3, 240, 320] -> (logits [N, outputs], pooled features [N, 96])."""
    import torch
    from torch import nn

    class SmallCnn(nn.Module):
        def __init__(self):
            super().__init__()
            layers, channels_in = [], 3
            for channels_out in CHANNELS:
                layers += [nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1, bias=False),
                           nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True)]
                channels_in = channels_out
            self.features = nn.Sequential(*layers)
            self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3),
                                      nn.Linear(CHANNELS[-1] * _reduced(HEIGHT) * _reduced(WIDTH), outputs))

        def forward(self, image: torch.Tensor):
            features = self.features(image)
            return self.head(features), features.mean(dim=(2, 3))

    return SmallCnn()


def _reduced(size: int) -> int:
    for _ in CHANNELS:
        size = (size + 1) // 2
    return size


def parent_module(cnn, feature_mean, feature_std, centres, scale):
    """The served parent: (anomaly probability [N, 1], novelty [N, 1]); statistics from calibration."""
    import torch
    from torch import nn

    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn = cnn
            for name, value in {"feature_mean": feature_mean, "feature_std": feature_std, "centres": centres,
                                "scale": scale}.items():
                self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32))

        def forward(self, image: torch.Tensor):
            logits, features = self.cnn(image)
            standard = (features - self.feature_mean) / self.feature_std
            distances = torch.cdist(standard, self.centres).min(dim=1, keepdim=True).values
            return torch.sigmoid(logits), distances / self.scale

    return Parent().eval()


def child_module(cnn):
    """The served child: per-class probability that the component is missing [N, classes]."""
    import torch
    from torch import nn

    class Child(nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn = cnn

        def forward(self, image: torch.Tensor):
            return torch.sigmoid(self.cnn(image)[0])

    return Child().eval()


def export_onnx(module, path: Path, output_names: list[str]) -> Path:
    """Trace to ONNX with a dynamic batch axis; written whole or not at all."""
    import torch

    partial = path.with_name(path.name + ".partial")
    example = torch.zeros(2, *IMAGE.dims)
    with torch.no_grad():
        torch.onnx.export(module, (example,), str(partial), input_names=[IMAGE.name], output_names=output_names,
                          dynamic_axes={name: {0: "batch"} for name in [IMAGE.name, *output_names]},
                          opset_version=ONNX_OPSET, dynamo=False)
    partial.replace(path)
    return path


def untrained(name: str, module_for, output_names: list[str]):
    """The export of version 1 before any training run: seeded random weights, said loudly."""
    def export(version_dir: Path, options: BuildOptions) -> dict[str, bytes]:
        import torch

        torch.manual_seed(options.seed)
        LOG.warning("\n%s\n!! %s version 1: UNTRAINED (random weights, seed %d); its verdicts are meaningless.\n"
                    "!! Train and promote a version: python -m defect_classifier train / approve\n%s",
                    "!" * 72, name, options.seed, "!" * 72)
        export_onnx(module_for(), version_dir / "model.onnx", output_names)
        return {}

    return export


def declare_classifier(name: str, outputs: list[Tensor], export, description: str,
                       model_files: dict[str, bytes] | None = None) -> ModelDeclaration:
    """A defect classifier: ONNX on onnxruntime (gpu) or in the python-backend ONNX runner (cpu).

    Serving follows ``version_policy`` (version 1 until a trained version is approved);
    training runs add numbered versions beside it (see ``defect_classifier.registry``).
    """
    return ModelDeclaration(
        name=name, inputs=[IMAGE], outputs=outputs, max_batch_size=MAX_BATCH_SIZE,
        serving={"gpu": Serving(platform="onnxruntime_onnx", instance_kind="KIND_GPU"),
                 "cpu": Serving(backend="python", instance_kind="KIND_CPU", runner="onnx_runner")},
        artifact="model.onnx", dynamic_batching_delay_us=500, export=export, served_version=1,
        parameters={"description": description}, model_files=model_files or {})
