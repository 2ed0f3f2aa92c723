"""Property-based fuzzing of the project's own parsers with Hypothesis.

One property for each: whatever comes in, out comes a correct answer or a refusal of the
module's own error type with a message, never another exception and never a hang (each
example has a deadline). Runs are derandomized (the same examples on every machine) and
bounded, so the file takes seconds. Each bug a property found is fixed in its parser and
kept here as an ``@example``.
"""
from __future__ import annotations

import io
import json
import re
import struct
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from builders.runners.image_headers import HeaderError, Limits, NotAnImage, UnsupportedFormat, image_size
from clients.colormap import ColorMapError, parse_hex, read_color_map
from defect_data import groundtruth, lookout, manifests
from local_server.invocation import InvocationError
from local_server.multi_model import MultiModelHost
from local_server.request_guard import (ELEMENT_SIZES, SAGEMAKER_BINARY_PREFIX, InvalidInferenceRequest,
                                        check_inference_request)
from tests.test_mutants import jpeg_declaring

pytestmark = pytest.mark.quick

FUZZ = settings(max_examples=150, deadline=500, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=40, deadline=2000)  # examples that write files or archives

SIGNATURES = [b"\xff\xd8", b"\xff\xd8\xff\xc0", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"BM", b"II*\x00",
              b"MM\x00*", b"II+\x00\x08\x00\x00\x00", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00WEBPVP8L",
              b"RIFF\x00\x00\x00\x00WEBPVP8X", b"GIF89a", b"P6 ", b"\x00\x00\x00\x18ftypavif"]
headers = st.builds(lambda signature, tail: signature + tail, st.sampled_from(SIGNATURES), st.binary(max_size=64))
any_bytes = st.one_of(st.binary(max_size=128), headers)


def refused_clearly(error: Exception, kind: type) -> None:
    assert isinstance(error, kind) and str(error).strip(), repr(error)


# -- the image header reader of the guards ----------------------------------------------------
@FUZZ
@given(any_bytes)
@example(b"\xff\xd8\xff\xe0\x00\x00")  # a zero segment length: refused, no endless loop
@example(b"II+\x00\x08\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00" + b"\xff" * 8)  # a BigTIFF count past the data
def test_header_reader_refuses_any_bytes_clearly(data):
    try:
        name, width, height = image_size(data)
    except (NotAnImage, UnsupportedFormat, HeaderError) as error:
        refused_clearly(error, ValueError)
        return
    assert name in ("JPEG", "PNG", "BMP", "TIFF", "WebP") and width >= 0 and height >= 0
    try:
        Limits(16_777_216, 2048, "fuzz_guard").check_encoded(data, "image 0")
    except ValueError as error:
        refused_clearly(error, ValueError)


def png_header(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sIIBBBBB", 13, b"IHDR", width, height, 8, 2, 0, 0, 0)


def bmp_header(width: int, height: int) -> bytes:
    return b"BM" + bytes(12) + struct.pack("<Iii", 40, width, height) + bytes(28)


def os2_bmp_header(width: int, height: int) -> bytes:
    """OS/2's BITMAPCOREHEADER: 12 bytes, unsigned 16-bit sizes."""
    return b"BM" + bytes(12) + struct.pack("<IHH", 12, width, height) + bytes(4)


def tiff_header(width: int, height: int) -> bytes:
    entries = [struct.pack("<HHII", 256, 4, 1, width), struct.pack("<HHII", 257, 4, 1, height)]
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2) + b"".join(entries) + bytes(4)


def webp_extended_header(width: int, height: int) -> bytes:
    sizes = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + bytes(4) + b"WEBPVP8X" + struct.pack("<I", 10) + bytes(4) + sizes


WRITERS = {"PNG": (png_header, 2**31 - 1), "JPEG": (jpeg_declaring, 2**16 - 1), "BMP": (bmp_header, 2**31 - 1),
           "BMP (OS/2)": (os2_bmp_header, 2**16 - 1),
           "TIFF": (tiff_header, 2**32 - 1), "WebP": (webp_extended_header, 2**24)}


@FUZZ
@given(st.sampled_from(sorted(WRITERS)), st.data())
@example("JPEG", None)
def test_header_reader_measures_what_it_reads(kind, data):
    """Any size each format can declare is read back exactly, and judged by the limits as its pixels say."""
    writer, largest = WRITERS[kind]
    if data is None:  # the regression: 16 bits per JPEG side, not 14
        width, height = 20000, 20000
    else:
        width, height = (data.draw(st.integers(1, largest), label=side) for side in ("width", "height"))
    encoded = writer(width, height) + bytes(8)
    assert image_size(encoded) == (kind.split()[0], width, height)
    limits = Limits(4_194_304, 2048, "fuzz_guard")
    over = width * height > limits.max_pixels or max(width, height) > limits.max_side
    try:
        limits.check_encoded(encoded, "image 0")
    except ValueError as error:
        assert over and f"{width}x{height}" in str(error)
    else:
        assert not over


# -- the request guard in front of the SageMaker route ----------------------------------------
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)
tensors = st.fixed_dictionaries({}, optional={
    "name": json_values, "datatype": st.sampled_from([*ELEMENT_SIZES, "FLOAT", 3]),
    "shape": st.lists(st.integers(-2, 2**64), max_size=4) | json_values, "data": json_values,
    "parameters": st.dictionaries(st.just("binary_data_size"), st.integers(-1, 2**40) | json_values, max_size=1)})
bodies = st.one_of(st.binary(max_size=200), json_values.map(lambda value: json.dumps(value).encode()),
                   st.lists(tensors, max_size=3).map(lambda inputs: json.dumps({"inputs": inputs}).encode()))
content_types = st.one_of(st.sampled_from(["application/json", "application/octet-stream", ""]),
                          st.text(max_size=6).map(lambda size: SAGEMAKER_BINARY_PREFIX + size))


@FUZZ
@given(bodies, content_types, st.none() | st.text(max_size=6))
@example(b'{"inputs": []}', SAGEMAKER_BINARY_PREFIX + "\u00b2", None)  # a superscript digit is no header size
@example(b'{"inputs": []}', "application/json", "\u0661\u0664")  # nor is an Arabic-Indic one
def test_request_guard_refuses_any_body_clearly(body, content_type, header_length):
    try:
        check_inference_request(body, content_type, header_length)
    except InvalidInferenceRequest as error:
        return refused_clearly(error, InvalidInferenceRequest)
    if content_type == "application/json":  # accepted: a JSON request the guard could read whole
        assert isinstance(json.loads(body)["inputs"], list)


shapes = st.lists(st.integers(0, 4), min_size=1, max_size=3)


def nested(flat: list, shape: list[int]):
    """``flat`` as nested lists of ``shape`` (the rows a JSON client sends)."""
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [nested(flat[row * step:(row + 1) * step], shape[1:]) for row in range(shape[0])]


@FUZZ
@given(shapes, st.sampled_from(sorted(set(ELEMENT_SIZES) - {"BYTES"})), st.integers(-1, 1), st.booleans())
def test_request_guard_passes_every_well_formed_request(shape, datatype, surplus, binary):
    """A request whose data fills its shape passes, in JSON or binary form; one element more or fewer does not."""
    elements = int(np.prod(shape))
    if binary:
        size = (elements + surplus) * ELEMENT_SIZES[datatype]
        tensor = {"name": "X", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": max(size, 0)}}
        header = json.dumps({"inputs": [tensor]}).encode()
        body, content_type = header + bytes(max(size, 0)), SAGEMAKER_BINARY_PREFIX + str(len(header))
    else:
        data = nested([1] * max(elements + surplus, 0), shape) if surplus == 0 else [1] * max(elements + surplus, 0)
        body = json.dumps({"inputs": [{"name": "X", "datatype": datatype, "shape": shape, "data": data}]}).encode()
        content_type = "application/json"
    if surplus == 0 or elements + surplus < 0:
        assert check_inference_request(body, content_type) is None
        return
    with pytest.raises(InvalidInferenceRequest, match=re.escape(f"input 'X' declares shape {json.dumps(shape)}")):
        check_inference_request(body, content_type)


# -- the manifest readers --------------------------------------------------------------------
color_maps = st.lists(st.tuples(st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True),
                                st.from_regex(r"#[0-9a-fA-F]{6}", fullmatch=True)),
                      min_size=2, max_size=4, unique_by=(lambda c: c[0], lambda c: c[1].lower())).map(dict)
ATTRIBUTES = ["source-ref", "anomaly-label", "anomaly-label-metadata", "auto-label", "auto-label-metadata",
              "anomaly-mask-ref", "anomaly-mask-ref-metadata", "other-label", "other-label-metadata"]
metadata = st.fixed_dictionaries({}, optional={
    "class-name": st.sampled_from(["normal", "anomaly", "odd"]) | json_values,
    "type": st.sampled_from([lookout.CLASSIFICATION, lookout.SEGMENTATION]),
    "internal-color-map": st.dictionaries(st.sampled_from(["0", "1", "x", "-1", " 2"]), st.fixed_dictionaries(
        {}, optional={"class-name": st.text(max_size=5) | json_values, "hex-color": st.text(max_size=8)}),
        max_size=3) | json_values})
lines = st.dictionaries(st.sampled_from(ATTRIBUTES), st.one_of(metadata, st.text(max_size=12), json_values),
                        max_size=6).map(json.dumps)
manifest_texts = st.lists(st.one_of(lines, st.text(max_size=30)), min_size=1, max_size=3).map("\n".join)


def written(text: str | bytes, folder: Path, name: str = "output.manifest") -> Path:
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return path


@FUZZ
@given(manifest_texts | st.binary(max_size=60))
@example('{"source-ref": "a\\u0000b.png", "auto-label": 1, "auto-label-metadata": {"class-name": "normal"}}')
@example("[" * 5000)
def test_lookout_manifest_reader_refuses_any_manifest_clearly(text):
    with tempfile.TemporaryDirectory() as folder:
        try:
            records = lookout.read_manifest(written(text, Path(folder)))
        except lookout.LookoutError as error:
            refused_clearly(error, lookout.LookoutError)
            assert "\n" not in str(error)  # one line, as the module promises
            return
    assert all(isinstance(record.anomalous, bool) and record.source for record in records)


@FUZZ
@given(st.lists(st.tuples(st.booleans(), st.none() | color_maps), min_size=1, max_size=4))
def test_lines_the_writers_make_read_back_as_written(samples):
    """``manifests`` (this project's ``auto-label``) and ``lookout`` (Lookout's own) lines both round-trip."""
    lines = []
    for number, (anomalous, color_map) in enumerate(samples):
        if anomalous and color_map:
            lines.append(manifests.anomaly_line(f"{number}.png", f"{number}-mask.png", color_map))
        else:
            lines.append(lookout.write_manifest_line(f"{number}.png", anomalous))
    with tempfile.TemporaryDirectory() as folder:
        records = lookout.read_manifest(manifests.write(Path(folder) / "train.manifest", lines))
    for record, (anomalous, color_map) in zip(records, samples, strict=True):
        assert record.anomalous == anomalous
        expected = {name: color.lower() for name, color in color_map.items()} if anomalous and color_map else None
        assert record.color_map == expected


def test_a_manifest_line_with_an_unknown_label_is_refused_naming_the_labels():
    with pytest.raises(ValueError, match="label 'odd' is not one of normal, anomaly"):
        manifests.image_line("a.png", "odd")


@FUZZ
@given(manifest_texts | st.binary(max_size=60))
@example('{"source-ref": "image.png", "pcb-ref": "mask.png"}')
@example('["source-ref", "pcb-ref"]')
@example("[" * 5000)
@example(b"\xff\xfe")
def test_ground_truth_reader_refuses_any_manifest_clearly(text):
    with tempfile.TemporaryDirectory() as folder:
        path = written(text, Path(folder))
        (path.parent / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a truncated image next to it
        try:
            labelled = groundtruth.read(path)
        except groundtruth.LabelError as error:
            return refused_clearly(error, groundtruth.LabelError)
        assert labelled.image.shape[:2] == labelled.mask.shape[:2]  # accepted: a photo and its mask, one size


# -- the colour-map reader --------------------------------------------------------------------
@FUZZ
@given(st.text(max_size=9))
@example("#-1-1-1")  # int() takes a sign
@example("#\u0661\u0662\u0663\u0664\u0665\u0666")  # and other scripts' digits
@example("# 1 2 3")
def test_hex_colours_are_six_hex_digits_or_refused(text):
    try:
        rgb = parse_hex(text)
    except ColorMapError as error:
        refused_clearly(error, ColorMapError)
        return
    assert all(0 <= channel <= 255 for channel in rgb)
    assert "#%02x%02x%02x" % rgb == "#" + text.strip().lstrip("#").lower()


@FUZZ
@given(manifest_texts | st.binary(max_size=60))
@example('{"pcb-ref-metadata": {"internal-color-map": []}}')
@example('{"pcb-ref-metadata": {"internal-color-map": {"0": {"hex-color": 7}}}}')
@example("[1]")
@example(b"\xff\xfe")
def test_colour_map_reader_refuses_any_manifest_clearly(text):
    with tempfile.TemporaryDirectory() as folder:
        try:
            color_map = read_color_map(written(text, Path(folder)))
        except ColorMapError as error:
            refused_clearly(error, ColorMapError)
            return
    assert all(isinstance(name, str) and len(rgb) == 3 for name, rgb in color_map.items())


# -- the archive checks of the multi-model host --------------------------------------------------
ENSEMBLE = 'name: "pipe"\nplatform: "ensemble"\nmax_batch_size: 0\n'
MEMBER_NAMES = ["pipe/config.pbtxt", "pipe/1/model.py", "step/config.pbtxt", "../escape", "/absolute", "pipe",
                "config.pbtxt"]
members = st.tuples(st.sampled_from(MEMBER_NAMES), st.sampled_from([ENSEMBLE.encode(), b"\xff\xfe", b"name: [",
                                                                   b'backend: "python"']) | st.binary(max_size=20))


def archive_of(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@FEW
@given(st.lists(members, max_size=4).map(archive_of) | st.binary(max_size=80))
@example(archive_of([("pipe/config.pbtxt", b"name: [")]))  # a config that is not protobuf text
@example(archive_of([("pipe/config.pbtxt", b"\xff\xfe")]))  # nor UTF-8
def test_archive_checks_refuse_any_archive_clearly(archive):
    with tempfile.TemporaryDirectory() as folder:
        host = MultiModelHost("http://127.0.0.1:9", lambda target: archive, Path(folder))  # never contacted
        try:
            models = host._extract("pipe.tar.gz", Path(folder) / "models" / "x" / "model")
        except InvocationError as error:
            assert 400 <= error.status < 500 and str(error).strip(), error
            return
    assert "pipe" in models


@FEW
@given(st.integers(1, 64), st.integers(1, 64), st.data())
def test_ground_truth_reader_reads_back_what_it_wrote(height, width, data):
    """A labelled sample written by ``groundtruth.write`` reads back with the same pixels and colour map."""
    color_map = data.draw(color_maps)
    colors = [parse_hex(color) for color in color_map.values()]
    picks = data.draw(st.lists(st.integers(0, len(colors) - 1), min_size=height * width, max_size=height * width))
    mask = np.array([colors[pick] for pick in picks], np.uint8).reshape(height, width, 3)
    image = np.full((height, width, 3), 90, np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        labelled = groundtruth.read(groundtruth.write(Path(folder), image, mask, color_map))
    np.testing.assert_array_equal(labelled.mask, mask)
    assert labelled.color_map == {name: color.lower() for name, color in color_map.items()}


@FEW
@given(any_bytes)
def test_lookout_image_reader_refuses_any_image_bytes_clearly(data):
    with tempfile.TemporaryDirectory() as folder:
        try:
            picture = lookout.Reader().image(str(written(data, Path(folder), "image.png")))
        except lookout.LookoutError as error:
            refused_clearly(error, lookout.LookoutError)
            return
    assert picture.ndim == 3 and picture.shape[2] == 3
