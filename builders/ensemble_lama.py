"""The ensemble ``ensemble_lama``: encoded image + encoded mask -> inpainted uint8 image, same size.

    IMAGE, MASK (PNG/JPEG bytes) -> lama_guard (python: sizes from the headers) ->
    lama_decode (DALI) -> lama_prepare (python: checks, binarise, pad to x8) ->
    lama (the generator) -> lama_finish (python: crop, uint8) -> INPAINTED

``lama_guard`` refuses an image or mask over LaMa's size limit before anything decodes
it (``builders/image_guard.py``).

Every step is an ensemble step, so SageMaker's explicit model control loads them all
with the ensemble. Same config on every target.
"""
from __future__ import annotations

from builders import lama, lama_decode, lama_finish, lama_prepare
from builders.declaration import BuildOptions, EnsembleStep, ModelDeclaration, Serving, Tensor
from builders.image_guard import ImageGuard

NAME = "ensemble_lama"
IMAGE = Tensor("IMAGE", "TYPE_UINT8", (-1,))
MASK = Tensor("MASK", "TYPE_UINT8", (-1,))
INPAINTED = Tensor("INPAINTED", "TYPE_UINT8", (-1, -1, 3))
# big-lama at 2048x2048 takes ~3.5 TMACs, minutes on a CPU: no side over 2048, and so
# no more pixels than 2048x2048 (max_pixels, the parameter every guard has).
MAX_SIDE = 2048
GUARD = ImageGuard("lama_guard", (IMAGE, MASK), max_pixels=MAX_SIDE * MAX_SIDE, max_side=MAX_SIDE,
                   max_batch_size=lama.MAX_BATCH_SIZE)


def declare(options: BuildOptions) -> ModelDeclaration:
    ensemble = Serving(platform="ensemble")
    steps = [
        GUARD.step(),
        EnsembleStep(lama_decode.NAME, {lama_decode.ENCODED_IMAGE.name: GUARD.checked(IMAGE),
                                        lama_decode.ENCODED_MASK.name: GUARD.checked(MASK)},
                     {lama_decode.IMAGE.name: "decoded_image", lama_decode.MASK.name: "decoded_mask"}),
        EnsembleStep(lama_prepare.NAME, {lama_decode.IMAGE.name: "decoded_image",
                                         lama_decode.MASK.name: "decoded_mask"},
                     {lama.IMAGE.name: "padded_image", lama.MASK.name: "padded_mask",
                      lama_prepare.SIZE.name: "original_size"}),
        EnsembleStep(lama.NAME, {lama.IMAGE.name: "padded_image", lama.MASK.name: "padded_mask"},
                     {lama.OUTPUT.name: "padded_inpainted"}),
        EnsembleStep(lama_finish.NAME, {lama.OUTPUT.name: "padded_inpainted",
                                        lama_prepare.SIZE.name: "original_size"},
                     {lama_finish.INPAINTED.name: INPAINTED.name}),
    ]
    return ModelDeclaration(name=NAME, inputs=[IMAGE, MASK], outputs=[INPAINTED],
                            max_batch_size=lama.MAX_BATCH_SIZE, serving={"gpu": ensemble, "cpu": ensemble},
                            steps=steps)
