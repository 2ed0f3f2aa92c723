"""``defect_child``: which components are missing from an anomalous board (multi-label).

Input ``IMAGE`` FP32 [3, 240, 320] in [-1, 1]; output ``MISSING_SCORES`` FP32
[classes]: per component class (``components.txt``, the colour map's order), the
probability that it is missing. ``defect_router`` calls it only for anomalies.
Trained by ``python -m defect_classifier train``; version 1 is untrained.
"""
from __future__ import annotations

from builders import defect_architecture as arch
from builders.declaration import BuildOptions, ModelDeclaration, Tensor

NAME = "defect_child"
MISSING_SCORES = Tensor("MISSING_SCORES", "TYPE_FP32", (len(arch.CLASSES),), label_filename="components.txt")
OUTPUTS = [MISSING_SCORES]
LABEL_FILES = {MISSING_SCORES.label_filename: ("\n".join(arch.CLASSES) + "\n").encode()}  # label_filename is per model: router and pipeline carry it too


def module(cnn=None):
    """The child as served; without arguments an untrained one."""
    return arch.child_module(cnn or arch.network(len(arch.CLASSES)))


def declare(options: BuildOptions) -> ModelDeclaration:
    return arch.declare_classifier(NAME, OUTPUTS, arch.untrained(NAME, module, [t.name for t in OUTPUTS]),
                                   "child of defect_inspection: missing components, called for anomalies",
                                   LABEL_FILES)
