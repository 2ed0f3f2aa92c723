"""``defect_parent``: normal or anomaly, and whether the image looks like a board at all.

Input ``IMAGE`` FP32 [3, 240, 320] in [-1, 1] (``defect_dali``'s output); outputs
``ANOMALY_SCORE`` FP32 [1] (probability that a component is missing) and ``NOVELTY``
FP32 [1] (<= 1 for images like the training boards; see ``defect_architecture``).
Trained by ``python -m defect_classifier train``; version 1 is untrained.
"""
from __future__ import annotations

from builders import defect_architecture as arch
from builders.declaration import BuildOptions, ModelDeclaration, Tensor

NAME = "defect_parent"
ANOMALY_SCORE = Tensor("ANOMALY_SCORE", "TYPE_FP32", (1,))
NOVELTY = Tensor("NOVELTY", "TYPE_FP32", (1,))
OUTPUTS = [ANOMALY_SCORE, NOVELTY]


def module(cnn=None, feature_mean=0.0, feature_std=1.0, centres=None, scale=1.0):
    """The parent as served; without arguments an untrained one."""
    import torch

    centres = torch.zeros(2, arch.CHANNELS[-1]) if centres is None else centres
    return arch.parent_module(cnn or arch.network(1), feature_mean, feature_std, centres, scale)


def declare(options: BuildOptions) -> ModelDeclaration:
    return arch.declare_classifier(NAME, OUTPUTS, arch.untrained(NAME, module, [t.name for t in OUTPUTS]),
                                   "parent of defect_inspection: normal (score < 0.5) or anomaly")
