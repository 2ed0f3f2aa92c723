"""``lama_prepare``: the python step between decoding and LaMa (both targets).

DALI cannot pad symmetrically (its pad fills with a constant), so the reference's
binarise-and-pad runs here, in numpy, with the size checks that give bad input a clear
error: mask and image sizes differ, image under 16 pixels. The largest size is checked
before decoding, by ``lama_guard`` (``ensemble_lama.GUARD``).
"""
from __future__ import annotations

from builders import lama, lama_decode
from builders.declaration import BuildOptions, ModelDeclaration, Serving, Tensor

NAME = "lama_prepare"
SIZE = Tensor("SIZE", "TYPE_INT32", (2,))
STEP = Serving(backend="python", instance_kind="KIND_CPU", runner="lama_prepare_step",
               helpers=("batching", "lama_processing"))


def declare(options: BuildOptions) -> ModelDeclaration:
    return ModelDeclaration(name=NAME, inputs=[lama_decode.IMAGE, lama_decode.MASK],
                            outputs=[lama.IMAGE, lama.MASK, SIZE], max_batch_size=lama.MAX_BATCH_SIZE,
                            serving={"gpu": STEP, "cpu": STEP})
