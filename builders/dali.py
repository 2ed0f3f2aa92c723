"""The DALI preprocessing model ``dali``: encoded image bytes in, 299x299x3 FP32 in [-1, 1] out.

``gpu`` serves ``model.dali`` with Triton's DALI backend (decoder ``device="mixed"``);
``cpu`` serves a ``model.dali`` whose decoder runs on the CPU through a python-backend
runner. Requests carry one encoded image per batch row; rows of different lengths are
either zero-padded by the client (JPEG/PNG decoders stop at their end marker) or, across
requests, merged by the dynamic batcher thanks to ``allow_ragged_batch``.
"""
from __future__ import annotations

from pathlib import Path

from builders.declaration import (BuildOptions, ModelDeclaration, Serving, Tensor, Warmup,
                                  WarmupInput)

NAME = "dali"
INPUT = Tensor("DALI_INPUT_0", "TYPE_UINT8", (-1,), allow_ragged_batch=True)
OUTPUT = Tensor("DALI_OUTPUT_0", "TYPE_FP32", (299, 299, 3))
IMAGE_SIZE = 299
MAX_BATCH_SIZE = 64
NUM_THREADS = 2
DECODER_DEVICE = {"gpu": "mixed", "cpu": "cpu"}
WARMUP_IMAGE = Path(__file__).resolve().parent.parent / "samples" / "chelsea.jpg"


def preprocessing_pipeline(decoder_device: str, batch_size: int = MAX_BATCH_SIZE,
                           num_threads: int = NUM_THREADS):
    """Decode -> resize to 299x299 -> scale to [-1, 1], HWC FP32 (Inception V3's input)."""
    from nvidia.dali import fn, pipeline_def, types  # DALI is big: clients import this module too

    # device_id=None: a pipeline can be serialized without a GPU; the DALI backend sets
    # the device of each model instance when it deserializes the pipeline.
    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=None)
    def pipeline():
        encoded = fn.external_source(name=INPUT.name, device="cpu", dtype=types.UINT8, ndim=1)
        images = fn.decoders.image(encoded, device=decoder_device, output_type=types.RGB)
        images = fn.resize(images, resize_x=IMAGE_SIZE, resize_y=IMAGE_SIZE)
        return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC",
                                        mean=[127.5] * 3, std=[127.5] * 3)

    return pipeline()


def export(version_dir: Path, options: BuildOptions) -> dict[str, bytes]:
    pipe = preprocessing_pipeline(DECODER_DEVICE[options.target])
    pipe.serialize(filename=str(version_dir / "model.dali"))
    return {}


def declare(options: BuildOptions) -> ModelDeclaration:
    warmup_bytes = WARMUP_IMAGE.read_bytes()
    warmup = Warmup("sample_jpeg", batch_size=1, inputs={
        INPUT.name: WarmupInput("TYPE_UINT8", (len(warmup_bytes),), input_data_file="sample.jpg")})
    threads = {"num_threads": str(NUM_THREADS)}
    return ModelDeclaration(
        name=NAME, inputs=[INPUT], outputs=[OUTPUT], max_batch_size=MAX_BATCH_SIZE,
        serving={"gpu": Serving(backend="dali", instance_kind="KIND_GPU", parameters=threads),
                 "cpu": Serving(backend="python", instance_kind="KIND_CPU", parameters=threads,
                                runner="dali_runner")},
        artifact="model.dali", dynamic_batching_delay_us=500, warmups=[warmup], export=export,
        model_files={"warmup/sample.jpg": warmup_bytes})
