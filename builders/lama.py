"""The LaMa inpainting model ``lama``: image + mask in, inpainted image out.

Inputs ``image`` FP32 [3, H, W] in [0, 1] and ``mask`` FP32 [1, H, W] (non-zero = hole);
output ``inpainted`` FP32 [3, H, W]: the generator's prediction inside the hole, the
input image outside it. H and W are dynamic and must be multiples of 8 (the
``ensemble_lama`` pads for you). Requests of equal size are batched together.

Exported as ONNX (``onnxruntime_onnx``) or TorchScript (``pytorch_libtorch``), both
from ``torch.jit.trace`` of the same module and weights. The Fourier units take the
route each runtime runs best (``builders.lama_architecture``): matrix-product DFTs in
ONNX, so that the graph has no DFT node (onnxruntime's CUDA provider has none);
``torch.fft`` in TorchScript, which cuFFT runs and which bakes no device into the graph.
The default format is per target: see ``builders.declaration.DEFAULT_LAMA_FORMAT``.

Weights: the official big-lama ``best.ckpt``, or a TorchScript / state-dict file of this
generator, from ``--lama-weights``; otherwise seeded random weights, said loudly.
"""
from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path

from builders.declaration import BuildOptions, ModelDeclaration, Serving, Tensor, WeightsError

LOG = logging.getLogger(__name__)
NAME = "lama"
IMAGE = Tensor("image", "TYPE_FP32", (3, -1, -1))
MASK = Tensor("mask", "TYPE_FP32", (1, -1, -1))
OUTPUT = Tensor("inpainted", "TYPE_FP32", (3, -1, -1))
MAX_BATCH_SIZE = 4
ONNX_OPSET = 17
TRACE_SIZE = (64, 96)  # any multiple of 8: the traced graph keeps H and W symbolic
FORMATS = {  # export format -> (artifact, Fourier route, gpu serving, cpu runner)
    "onnx": ("model.onnx", "matrix", Serving(platform="onnxruntime_onnx", instance_kind="KIND_GPU"),
             "onnx_runner"),
    # pytorch_libtorch binds inputs by forward()'s argument names (image, mask) and the one
    # output by config order, so the tensor names stay those of the ONNX export.
    "torchscript": ("model.pt", "fft", Serving(platform="pytorch_libtorch", instance_kind="KIND_GPU"),
                    "torchscript_runner"),
}


class BakedDeviceError(RuntimeError):
    """A traced graph holds a device constant: it would run only on the device it was traced on."""


def inpainter(options: BuildOptions):
    """The ``lama`` model as a torch module: binarise, mask the image, generate, composite."""
    import torch
    from torch import nn

    from builders.lama_architecture import BIG_LAMA, FFCResNetGenerator

    size, weights = (BIG_LAMA, None) if options.lama_weights is None else \
        read_generator_weights(Path(options.lama_weights))
    route = FORMATS[options.lama_format][1]

    class LamaInpainter(nn.Module):
        def __init__(self):
            super().__init__()
            self.generator = FFCResNetGenerator(size, fourier_route=route)

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            hole = (mask > 0).to(image.dtype)
            prediction = self.generator(torch.cat([image * (1 - hole), hole], dim=1))
            return hole * prediction + (1 - hole) * image

    torch.manual_seed(options.seed)
    model = LamaInpainter()
    if weights is not None:
        model.generator.load_state_dict(weights, strict=True)
    else:
        LOG.warning("\n%s\n!! LaMa: no weights file given, building big-lama with RANDOM weights (seed %d).\n"
                    "!! It fills holes with grey noise. Pass --lama-weights big-lama/models/best.ckpt, or a\n"
                    "!! generator trained with python -m defect_data.train_lama, for real inpainting.\n%s",
                    "!" * 72, options.seed, "!" * 72)
    return model.eval()


def _load(path: Path):
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:  # not TorchScript: a pickled checkpoint the user chose to trust
        try:
            return torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as error:  # torch.load raises many kinds on foreign files
            raise WeightsError(f"{path} is neither a PyTorch checkpoint nor TorchScript: {error}") from None


def read_generator_weights(path: Path):
    """(generator size, generator tensors) from an official checkpoint, a state dict, TorchScript,
    or a checkpoint of ``defect_data.train_lama`` (which records its smaller size)."""
    if not path.is_file():
        raise WeightsError(f"LaMa weights file {path} does not exist")
    stat = path.stat()
    return _read_checked(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _read_checked(path: Path, mtime_ns: int, size_bytes: int):
    """Read once per file version: declare, describe and export all need the weights (big-lama: 200 MB)."""
    from builders.lama_architecture import BIG_LAMA, FFCResNetGenerator, GeneratorSize, generator_state_dict

    state = _load(path)
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    size = GeneratorSize(**state["generator_size"]) if "generator_size" in state else BIG_LAMA
    tensors = state.get("state_dict", state)
    generator = generator_state_dict(state) or {key: value for key, value in tensors.items()
                                                if hasattr(value, "shape")}
    expected = FFCResNetGenerator(size).state_dict()
    missing = sorted(set(expected) - set(generator))
    unexpected = sorted(set(generator) - set(expected))
    if missing or unexpected:
        raise WeightsError(f"{path} does not fit the LaMa generator ({size}): {len(missing)} missing keys "
                           f"(first: {missing[:3]}), {len(unexpected)} unexpected (first: {unexpected[:3]})")
    return size, generator


def weights_description(options: BuildOptions) -> str:
    if options.lama_weights is None:
        return f"random (seed {options.seed}): NOT trained, fills holes with noise"
    from builders.lama_architecture import BIG_LAMA

    size, _ = read_generator_weights(Path(options.lama_weights))
    name = "big-lama" if size == BIG_LAMA else f"LaMa ngf {size.ngf}, {size.n_blocks} blocks"
    return f"{name} weights {Path(options.lama_weights).name}"


def example_inputs(height: int = TRACE_SIZE[0], width: int = TRACE_SIZE[1], batch: int = 1):
    import torch

    generator = torch.Generator().manual_seed(1)
    image = torch.rand(batch, 3, height, width, generator=generator)
    mask = (torch.rand(batch, 1, height, width, generator=generator) > 0.7).float()
    return image, mask


def baked_devices(module) -> list[str]:
    """The device constants of a TorchScript module's graph, e.g. ``["cpu"]``; none is portable."""
    graph = module.inlined_graph  # keep it referenced: its nodes die with it
    nodes = graph.findAllNodes("prim::Constant", True)
    return sorted({node.s("value") for node in nodes if node.output().type().kind() == "DeviceObjType"})


def traced(model):
    """``model`` traced on the CPU; refused if the trace pinned a device (it would fail on a GPU)."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what pytorch_libtorch serves
        module = torch.jit.trace(model, example_inputs(), check_trace=False)
    devices = baked_devices(module)
    if devices:
        raise BakedDeviceError(f"the traced LaMa graph holds the device(s) {', '.join(devices)}: it would fail "
                               f"on any other device; trace the Fourier units' 'fft' route for TorchScript")
    return module


def export_onnx(model, path: Path) -> None:
    import torch

    dynamic = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # constant-folding notes about Slice steps
        torch.onnx.export(model, example_inputs(), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=[IMAGE.name, MASK.name], output_names=[OUTPUT.name],
                          dynamic_axes={IMAGE.name: dynamic, MASK.name: dynamic, OUTPUT.name: dynamic})


def export(version_dir: Path, options: BuildOptions) -> dict[str, bytes]:
    model = inpainter(options)
    artifact = version_dir / FORMATS[options.lama_format][0]
    if options.lama_format == "torchscript":
        traced(model).save(str(artifact))
    else:
        export_onnx(model, artifact)
    LOG.info("LaMa exported as %s (weights: %s)", artifact.name, weights_description(options))
    return {}


def declare(options: BuildOptions) -> ModelDeclaration:
    artifact, _, gpu, runner = FORMATS[options.lama_format]
    if options.lama_weights is not None and not Path(options.lama_weights).is_file():
        raise WeightsError(f"LaMa weights file {options.lama_weights} does not exist")
    return ModelDeclaration(
        name=NAME, inputs=[IMAGE, MASK], outputs=[OUTPUT], max_batch_size=MAX_BATCH_SIZE,
        serving={"gpu": gpu, "cpu": Serving(backend="python", instance_kind="KIND_CPU", runner=runner)},
        artifact=artifact, dynamic_batching_delay_us=1000,
        parameters={"weights": weights_description(options)}, export=export)
