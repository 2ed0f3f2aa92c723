"""The LaMa generator is big-lama, layer for layer, and its exports agree with it."""
from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from builders import lama
from builders.declaration import BuildOptions, WeightsError
from builders.lama_architecture import (FFCResNetGenerator, FourierUnit, GeneratorSize, irfft2_native, irfft2_ortho,
                                        rfft2_ortho, self_conjugate_imag_zeroed, set_fourier_route)

SMALL = GeneratorSize(ngf=16, n_blocks=2)  # the full structure (FFC blocks, Fourier units), a fraction of the cost


@pytest.fixture(scope="module")
def eager():
    return lama.inpainter(BuildOptions())  # seed 0: the weights of the session's built repository


@pytest.fixture(scope="module")
def scripted():
    """The TorchScript export as ``--lama-format torchscript`` writes it: big-lama, seed 0, 'fft' route."""
    return lama.traced(lama.inpainter(BuildOptions(lama_format="torchscript")))


class SmallInpainter(torch.nn.Module):
    """A small generator behind the (image, mask) interface that ``lama.traced`` traces."""

    def __init__(self, route: str):
        super().__init__()
        torch.manual_seed(0)
        self.generator = FFCResNetGenerator(SMALL, fourier_route=route).eval()
        for module in self.generator.modules():  # BatchNorm statistics away from the identity
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)

    def forward(self, image, mask):
        return self.generator(torch.cat([image * (1 - mask), mask], dim=1))


def test_generator_state_dict_has_big_lamas_tensor_count_parameter_count_and_key_shapes():
    generator = FFCResNetGenerator()
    state = generator.state_dict()
    parameters = list(generator.parameters())
    assert (len(state), len(parameters), len(state) - len(parameters)) == (989, 533, 456)
    assert sum(p.numel() for p in parameters) == 50_975_875
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in generator.modules()) == 152
    keys = list(state)
    assert keys[:2] == ["model.1.ffc.convl2l.weight", "model.1.bn_l.weight"] and keys[-2:] == ["model.34.weight", "model.34.bias"]
    shapes = {
        "model.1.ffc.convl2l.weight": (64, 4, 7, 7), "model.2.ffc.convl2l.weight": (128, 64, 3, 3),
        "model.4.ffc.convl2l.weight": (128, 256, 3, 3), "model.4.ffc.convl2g.weight": (384, 256, 3, 3),
        "model.4.bn_l.weight": (128,), "model.4.bn_g.weight": (384,),
        "model.5.conv1.ffc.convg2g.conv1.0.weight": (192, 384, 1, 1),
        "model.5.conv1.ffc.convg2g.fu.conv_layer.weight": (384, 384, 1, 1),
        "model.5.conv1.ffc.convg2g.conv2.weight": (384, 192, 1, 1),
        "model.30.weight": (128, 64, 3, 3), "model.31.weight": (64,), "model.34.weight": (3, 64, 7, 7),
        "model.34.bias": (3,),
    }
    assert {key: tuple(state[key].shape) for key in shapes} == shapes
    for block in range(5, 23):
        assert sum(key.startswith(f"model.{block}.") for key in keys) == 52


@pytest.mark.parametrize("height,width", [(8, 8), (7, 9), (64, 65), (5, 4)])
def test_matrix_dft_equals_torch_fft_forward_and_inverse(height, width):
    x = torch.randn(2, 3, height, width, dtype=torch.float32)
    real, imag = rfft2_ortho(x)
    expected = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
    assert torch.allclose(real, expected.real, atol=1e-5) and torch.allclose(imag, expected.imag, atol=1e-5)
    spectrum = torch.randn_like(expected)
    inverse = torch.fft.irfftn(spectrum, s=(height, width), dim=(-2, -1), norm="ortho")
    assert torch.allclose(irfft2_ortho(spectrum.real, spectrum.imag, x), inverse, atol=1e-5)


@pytest.mark.parametrize("width", [8, 9])
def test_inverse_hands_the_complex_to_real_step_no_imaginary_part_in_dc_or_nyquist_bins(width):
    rows = torch.complex(torch.randn(2, 3, 5, width // 2 + 1), torch.randn(2, 3, 5, width // 2 + 1))
    zeroed = self_conjugate_imag_zeroed(rows, width)
    self_conjugate = [0, width // 2] if width % 2 == 0 else [0]
    assert (zeroed.imag[..., self_conjugate] == 0).all() and torch.equal(zeroed.real, rows.real)
    others = [k for k in range(width // 2 + 1) if k not in self_conjugate]
    assert torch.equal(zeroed.imag[..., others], rows.imag[..., others])


@pytest.mark.parametrize("height,width", [(16, 16), (7, 9), (128, 128)])
def test_fft_inverse_of_a_non_hermitian_spectrum_equals_the_matrix_inverse(height, width):
    # What a Fourier unit's convolution hands the inverse: a spectrum no real image has.
    real, imag = torch.randn(2, 3, height, width // 2 + 1), torch.randn(2, 3, height, width // 2 + 1)
    like = torch.empty(2, 3, height, width)
    assert torch.allclose(irfft2_native(real, imag, like), irfft2_ortho(real, imag, like), atol=1e-4)


def test_fourier_unit_equals_the_fft_formulation_of_the_reference():
    torch.manual_seed(0)
    unit = FourierUnit(6).eval()
    unit.bn.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 16, 24)
    # The reference: rfftn, interleave (re, im) per channel, 1x1 conv + BN + ReLU, irfftn.
    spectrum = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
    stacked = torch.stack((spectrum.real, spectrum.imag), dim=-1).permute(0, 1, 4, 2, 3).reshape(2, 12, 16, 13)
    mixed = unit.relu(unit.bn(unit.conv_layer(stacked))).view(2, 6, 2, 16, 13).permute(0, 1, 3, 4, 2)
    expected = torch.fft.irfftn(torch.complex(mixed[..., 0], mixed[..., 1]), s=(16, 24), dim=(-2, -1), norm="ortho")
    with torch.no_grad():
        assert torch.allclose(unit(x), expected, atol=1e-5)


def test_fourier_route_is_a_module_option_not_weights():
    matrix, fft = FFCResNetGenerator().state_dict(), FFCResNetGenerator(fourier_route="fft").state_dict()
    assert len(fft) == 989 and {k: v.shape for k, v in fft.items()} == {k: v.shape for k, v in matrix.items()}
    assert list(fft) == list(matrix)
    with pytest.raises(ValueError, match="unknown Fourier route 'dft'"):
        FFCResNetGenerator(SMALL, fourier_route="dft")


@pytest.mark.parametrize("height,width", [(8, 8), (7, 9), (64, 65), (24, 16)])
def test_fft_route_equals_matrix_route_in_a_fourier_unit_at_odd_and_even_sizes(height, width):
    torch.manual_seed(0)
    unit = FourierUnit(6).eval()
    unit.bn.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, height, width)
    with torch.no_grad():
        by_matrix = unit(x)
        unit.route = "fft"
        assert torch.allclose(unit(x), by_matrix, atol=1e-5)


@pytest.mark.parametrize("height,width", [(64, 96), (72, 128), (136, 80), (200, 200)])
def test_fft_route_generator_equals_matrix_route_generator_at_batch_2(height, width):
    model = SmallInpainter("fft")
    image, mask = lama.example_inputs(height, width, batch=2)
    with torch.no_grad():
        by_fft = model(image, mask)
        by_matrix = set_fourier_route(model, "matrix")(image, mask)
    assert by_fft.shape == (2, 3, height, width)
    assert (by_fft - by_matrix).abs().max() < 1e-5


def test_traced_fft_module_runs_at_sizes_and_batches_it_was_not_traced_at():
    model = SmallInpainter("fft")
    module = lama.traced(model)  # traced at lama.TRACE_SIZE, batch 1
    for height, width, batch in [(72, 128, 2), (136, 80, 3), (lama.TRACE_SIZE[1], lama.TRACE_SIZE[0], 2)]:
        image, mask = lama.example_inputs(height, width, batch)
        with torch.no_grad():
            assert (module(image, mask) - model(image, mask)).abs().max() < 1e-5


def test_tracing_the_matrix_route_bakes_the_cpu_device_and_is_refused():
    """The bug a GPU met: matrices built with device=x.device are traced as CPU constants."""
    model = SmallInpainter("matrix")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        raw = torch.jit.trace(model, lama.example_inputs(), check_trace=False)
    assert lama.baked_devices(raw) == ["cpu"]
    assert 'Device = prim::Constant[value="cpu"]' in str(raw.inlined_graph)
    with pytest.raises(lama.BakedDeviceError, match="holds the device.s. cpu"):
        lama.traced(model)


def test_torchscript_export_holds_no_device_constant_or_device_literal(scripted):
    graph = str(scripted.inlined_graph)
    assert lama.baked_devices(scripted) == []
    assert "Device = prim::Constant" not in graph and "device=" not in scripted.code
    assert "aten::fft_rfftn" in graph and "aten::fft_ifft" in graph and "aten::fft_irfft" in graph
    assert "aten::matmul" not in graph


def test_onnx_export_holds_no_device_attribute_and_no_dft_node(cpu_repository):
    import onnx

    model = onnx.load(str(cpu_repository / "lama" / "1" / "model.onnx"), load_external_data=False)
    attributes = [attribute for node in model.graph.node for attribute in node.attribute]
    assert attributes and not [a.name for a in attributes if "device" in a.name.lower()]
    strings = [a.s.decode() for a in attributes if a.type == onnx.AttributeProto.STRING]
    assert not [text for text in strings if "cpu" in text or "cuda" in text]
    assert "DFT" not in {node.op_type for node in model.graph.node}


def test_official_checkpoint_layout_loads_strictly_ignoring_other_networks(tmp_path):
    weights = {f"generator.{key}": torch.randn_like(value) if value.is_floating_point() else value
               for key, value in FFCResNetGenerator().state_dict().items()}
    checkpoint = {"state_dict": {**weights, "discriminator.model.0.0.weight": torch.zeros(64, 3, 4, 4),
                                 "loss_resnet_pl.impl.conv1.weight": torch.zeros(1)},
                  "hyper_parameters": {"generator": {"kind": "ffc_resnet"}}, "epoch": 40}
    path = tmp_path / "best.ckpt"
    torch.save(checkpoint, path)
    model = lama.inpainter(BuildOptions(lama_weights=path))
    loaded = model.generator.state_dict()["model.5.conv1.ffc.convg2g.fu.conv_layer.weight"]
    assert torch.equal(loaded, weights["generator.model.5.conv1.ffc.convg2g.fu.conv_layer.weight"])
    assert lama.weights_description(BuildOptions(lama_weights=path)) == "big-lama weights best.ckpt"


def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_keys(tmp_path):
    state = FFCResNetGenerator().state_dict()
    state.pop("model.34.bias")
    state["model.99.weight"] = torch.zeros(1)
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"1 missing keys \(first: \['model.34.bias'\]\), 1 unexpected"):
        lama.read_generator_weights(path)
    with pytest.raises(WeightsError, match="does not exist"):
        lama.read_generator_weights(tmp_path / "nope.ckpt")


def test_onnx_torchscript_and_eager_agree_at_several_sizes(cpu_repository, eager, scripted, tmp_path):
    scripted.save(str(tmp_path / "model.pt"))
    assert lama.read_generator_weights(tmp_path / "model.pt")[1].keys() == FFCResNetGenerator().state_dict().keys()
    session = ort.InferenceSession(str(cpu_repository / "lama" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    for height, width, batch in [(64, 96, 1), (72, 128, 2), (136, 80, 1)]:
        image, mask = lama.example_inputs(height, width, batch)
        with torch.no_grad():
            expected = eager(image, mask).numpy()
            from_script = scripted(image, mask).numpy()
        from_onnx = session.run(None, {"image": image.numpy(), "mask": mask.numpy()})[0]
        assert from_onnx.shape == expected.shape == (batch, 3, height, width)
        assert np.abs(from_script - expected).max() < 1e-5
        assert np.abs(from_onnx - expected).max() < 1e-4
        outside = mask.numpy().repeat(3, axis=1) == 0
        assert np.array_equal(from_onnx[outside], image.numpy()[outside])


def test_torchscript_export_is_served_by_its_runner_and_equals_eager(eager, tmp_path):
    from builders.repository import build_repository
    from clients.protocols import Route, infer
    from local_server import TritonServer

    repository = tmp_path / "torchscript"
    build_repository(repository, BuildOptions(target="cpu", lama_format="torchscript", models=("lama",)))
    assert (repository / "lama" / "1" / "model.pt").is_file() and not (repository / "dali").exists()
    assert lama.baked_devices(torch.jit.load(str(repository / "lama" / "1" / "model.pt"))) == []
    image, mask = lama.example_inputs(72, 104, batch=2)
    with TritonServer(repository) as server:
        served = infer(Route("http-binary", server.http_url), lama.NAME,
                       {"image": image.numpy(), "mask": mask.numpy()}, ["inpainted"])["inpainted"]
    with torch.no_grad():
        assert np.abs(served - eager(image, mask).numpy()).max() < 1e-5


def test_unknown_model_name_is_refused():
    from builders.repository import declarations

    with pytest.raises(ValueError, match="no model named lamma"):
        declarations(BuildOptions(models=("lamma",)))
