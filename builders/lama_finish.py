"""``lama_finish``: the python step after LaMa (both targets): crop the padding, back to uint8 HWC.

A python step rather than DALI because the crop size travels as a tensor (``SIZE``) from
``lama_prepare``, and the reference truncates (not rounds) to uint8.
"""
from __future__ import annotations

from builders import lama, lama_prepare
from builders.declaration import BuildOptions, ModelDeclaration, Serving, Tensor

NAME = "lama_finish"
INPAINTED = Tensor("INPAINTED", "TYPE_UINT8", (-1, -1, 3))
STEP = Serving(backend="python", instance_kind="KIND_CPU", runner="lama_finish_step",
               helpers=("batching", "lama_processing"))


def declare(options: BuildOptions) -> ModelDeclaration:
    return ModelDeclaration(name=NAME, inputs=[lama.OUTPUT, lama_prepare.SIZE], outputs=[INPAINTED],
                            max_batch_size=lama.MAX_BATCH_SIZE, serving={"gpu": STEP, "cpu": STEP})
