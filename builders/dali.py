"""The DALI preprocessing model ``dali``: encoded image bytes in, 299x299x3 FP32 in [-1, 1] out.

``gpu`` serves ``model.dali`` with Triton's DALI backend (decoder ``device="mixed"``);
``cpu`` serves a ``model.dali`` whose decoder runs on the CPU through a python-backend
runner. Requests carry one encoded image per batch row; rows of different lengths are
either zero-padded by the client (JPEG/PNG decoders stop at their end marker) or, across
requests, merged by the dynamic batcher thanks to ``allow_ragged_batch``.
"""
from __future__ import annotations

from pathlib import Path

from builders.declaration import BuildOptions, ModelDeclaration, Serving, Tensor, Warmup, WarmupInput

NAME = "dali"
INPUT = Tensor("DALI_INPUT_0", "TYPE_UINT8", (-1,), allow_ragged_batch=True)
OUTPUT = Tensor("DALI_OUTPUT_0", "TYPE_FP32", (299, 299, 3))
IMAGE_SIZE = 299
MAX_BATCH_SIZE = 64  # the cpu runner's (and the ensemble's) batch
NUM_THREADS = 2  # the cpu runner's: it shares a small CPU with ONNX Runtime
# A GPU instance decodes with nvJPEG and has CPU cores to spare: the settings of the AWS post
# this repository follows. The ensembles keep their smaller batch (a step may take more).
GPU_MAX_BATCH_SIZE = 256
GPU_NUM_THREADS = 12
DECODER_DEVICE = {"gpu": "mixed", "cpu": "cpu"}
PIPELINE_SETTINGS = {"gpu": (GPU_MAX_BATCH_SIZE, GPU_NUM_THREADS), "cpu": (MAX_BATCH_SIZE, NUM_THREADS)}
WARMUP_IMAGE = Path(__file__).resolve().parent.parent / "samples" / "chelsea.jpg"


def preprocessing_pipeline(decoder_device: str, batch_size: int = MAX_BATCH_SIZE,
                           num_threads: int = NUM_THREADS, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE),
                           layout: str = "HWC", with_shape: bool = False):
    """Decode -> resize to ``size`` (height, width) -> scale to [-1, 1], FP32 in ``layout``.

    The defaults give Inception V3's input; ``with_shape`` adds a second output, the
    encoded image's own (height, width, channels) as INT64.
    """
    from nvidia.dali import fn, pipeline_def, types  # DALI is big: clients import this module too

    # device_id=None: a pipeline can be serialized without a GPU; the DALI backend sets
    # the device of each model instance when it deserializes the pipeline.
    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=None)
    def pipeline():
        encoded = fn.external_source(name=INPUT.name, device="cpu", dtype=types.UINT8, ndim=1)
        images = fn.decoders.image(encoded, device=decoder_device, output_type=types.RGB)
        images = fn.resize(images, resize_x=size[1], resize_y=size[0])
        normalized = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout=layout,
                                              mean=[127.5] * 3, std=[127.5] * 3)
        return (normalized, fn.peek_image_shape(encoded, dtype=types.INT64)) if with_shape else normalized

    return pipeline()


def declare_pipeline(name: str, outputs: list[Tensor], build_pipeline) -> ModelDeclaration:
    """A DALI model: ``build_pipeline(decoder_device, batch_size, num_threads)`` serialized to
    ``model.dali`` with the target's settings, warmed up on a JPEG."""
    def export(version_dir: Path, options: BuildOptions) -> dict[str, bytes]:
        batch_size, num_threads = PIPELINE_SETTINGS[options.target]
        build_pipeline(DECODER_DEVICE[options.target], batch_size=batch_size, num_threads=num_threads).serialize(
            filename=str(version_dir / "model.dali"))
        return {}

    warmup_bytes = WARMUP_IMAGE.read_bytes()
    warmup = Warmup("sample_jpeg", batch_size=1, inputs={
        INPUT.name: WarmupInput("TYPE_UINT8", (len(warmup_bytes),), input_data_file="sample.jpg")})
    return ModelDeclaration(
        name=name, inputs=[INPUT], outputs=outputs, max_batch_size=MAX_BATCH_SIZE,
        serving={"gpu": Serving(backend="dali", instance_kind="KIND_GPU", max_batch_size=GPU_MAX_BATCH_SIZE,
                                parameters={"num_threads": str(GPU_NUM_THREADS)}),
                 "cpu": Serving(backend="python", instance_kind="KIND_CPU",
                                parameters={"num_threads": str(NUM_THREADS)}, runner="dali_runner")},
        artifact="model.dali", dynamic_batching_delay_us=500, warmups=[warmup], export=export,
        model_files={"warmup/sample.jpg": warmup_bytes})


def declare(options: BuildOptions) -> ModelDeclaration:
    return declare_pipeline(NAME, [OUTPUT], preprocessing_pipeline)
