"""``lama_decode``: DALI decodes the encoded image (RGB) and mask (grayscale) of ``ensemble_lama``.

Decoding is the step DALI does best (nvJPEG on a GPU). The mask is decoded as grayscale,
as the reference code reads it: a colour mask becomes grey, and any non-black pixel
is a hole. No resize: LaMa works at the image's own size.
"""
from __future__ import annotations

from pathlib import Path

from builders import dali
from builders.declaration import BuildOptions, ModelDeclaration, Serving, Tensor

NAME = "lama_decode"
ENCODED_IMAGE = Tensor("ENCODED_IMAGE", "TYPE_UINT8", (-1,), allow_ragged_batch=True)
ENCODED_MASK = Tensor("ENCODED_MASK", "TYPE_UINT8", (-1,), allow_ragged_batch=True)
IMAGE = Tensor("DECODED_IMAGE", "TYPE_UINT8", (-1, -1, 3))
MASK = Tensor("DECODED_MASK", "TYPE_UINT8", (-1, -1, 1))
MAX_BATCH_SIZE = 4


def decode_pipeline(decoder_device: str, batch_size: int = MAX_BATCH_SIZE, num_threads: int = dali.NUM_THREADS):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=None)
    def pipeline():
        image = fn.external_source(name=ENCODED_IMAGE.name, device="cpu", dtype=types.UINT8, ndim=1)
        mask = fn.external_source(name=ENCODED_MASK.name, device="cpu", dtype=types.UINT8, ndim=1)
        return (fn.decoders.image(image, device=decoder_device, output_type=types.RGB),
                fn.decoders.image(mask, device=decoder_device, output_type=types.GRAY))

    return pipeline()


def export(version_dir: Path, options: BuildOptions) -> dict[str, bytes]:
    num_threads = dali.PIPELINE_SETTINGS[options.target][1]  # the batch stays LaMa's
    decode_pipeline(dali.DECODER_DEVICE[options.target], num_threads=num_threads).serialize(
        filename=str(version_dir / "model.dali"))
    return {}


def declare(options: BuildOptions) -> ModelDeclaration:
    return ModelDeclaration(
        name=NAME, inputs=[ENCODED_IMAGE, ENCODED_MASK], outputs=[IMAGE, MASK], max_batch_size=MAX_BATCH_SIZE,
        serving={"gpu": Serving(backend="dali", instance_kind="KIND_GPU",
                                parameters={"num_threads": str(dali.GPU_NUM_THREADS)}),
                 "cpu": Serving(backend="python", instance_kind="KIND_CPU",
                                parameters={"num_threads": str(dali.NUM_THREADS)},
                                runner="dali_runner")},
        artifact="model.dali", dynamic_batching_delay_us=500, export=export)
