"""Image sizes read from encoded headers, never from decoded pixels, checked against limits.

Used by the guard step that opens every ensemble (``image_guard_step``) and by the
in-process references. Standard library only: the guard runs in the python backend of
SageMaker's Triton container, which has numpy but not Pillow. Errors are ValueErrors
naming the image and the problem (the step reports them as HTTP 400).

Only the formats named in ``READABLE`` pass: each of them DALI decodes, and for each
the size is read here. Other image formats are refused as unsupported, even those
DALI could decode (JPEG 2000, PNM), so that no image reaches a decoder unmeasured.
"""
import struct
from dataclasses import dataclass

READABLE = "JPEG, PNG, BMP, TIFF or WebP"
# Recognised by their signature, refused by name (DALI cannot decode most of them).
UNSUPPORTED = {b"GIF87a": "GIF", b"GIF89a": "GIF", b"\x00\x00\x00\x0cjP  \r\n\x87\n": "JPEG 2000",
               b"\xff\x4f\xff\x51": "JPEG 2000", b"8BPS": "PSD", b"\x00\x00\x01\x00": "ICO"}
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis")
JPEG_FRAME_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 (not DHT, JPG, DAC)
JPEG_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0..RST7: no length field
JPEG_DATA_MARKERS = {0xD9: "the end of the image", 0xDA: "the image data"}  # EOI, SOS


class NotAnImage(ValueError):
    """No image format known here starts with these bytes."""


class UnsupportedFormat(ValueError):
    """An image format the pipelines do not take."""


class HeaderError(ValueError):
    """The header of a readable format is there but cannot be read (truncated or corrupt)."""


def _png(data):
    if data[12:16] != b"IHDR":
        raise HeaderError("no IHDR chunk after the signature")
    return struct.unpack_from(">II", data, 16)


def _jpeg(data):
    offset = 2
    while True:
        if data[offset] != 0xFF:
            raise HeaderError(f"no marker at byte {offset}")
        while data[offset] == 0xFF:  # fill bytes may precede a marker
            offset += 1
        marker, offset = data[offset], offset + 1
        if marker in JPEG_STANDALONE_MARKERS:
            continue
        if marker in JPEG_DATA_MARKERS:
            raise HeaderError(f"no frame header (SOF) before {JPEG_DATA_MARKERS[marker]}")
        if marker in JPEG_FRAME_MARKERS:
            height, width = struct.unpack_from(">HH", data, offset + 3)  # after length and precision
            if height == 0:  # the height would follow the first scan, in a DNL marker
                raise HeaderError("the frame header gives no height")
            return width, height
        offset += struct.unpack_from(">H", data, offset)[0]


def _bmp(data):
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes
        return struct.unpack_from("<HH", data, 18)
    width, height = struct.unpack_from("<ii", data, 18)
    if width <= 0:
        raise HeaderError(f"width {width}")
    return width, abs(height)  # a negative height means rows stored top-down


def _tiff(data):
    """The first image file directory: DALI decodes the first page."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")  # BigTIFF: 64-bit offsets and counts, 20-byte entries
    offset_format, count_format, entry_size = ("Q", "Q", 20) if big else ("I", "H", 12)
    (directory,) = struct.unpack_from(order + offset_format, data, 8 if big else 4)
    (entries,) = struct.unpack_from(order + count_format, data, directory)
    first_entry = directory + struct.calcsize(count_format)
    sizes = {}
    for entry in range(first_entry, first_entry + entries * entry_size, entry_size):
        tag, kind = struct.unpack_from(order + "HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            value_at = entry + 4 + struct.calcsize(offset_format)
            sizes[tag] = struct.unpack_from(order + ("H" if kind == 3 else "I"), data, value_at)[0]
    if len(sizes) < 2:
        raise HeaderError("the first directory gives no ImageWidth or no ImageLength")
    return sizes[256], sizes[257]


def _webp(data):
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the frame tag and start code
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one, after the signature byte
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes minus one, after the flags
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise HeaderError(f"unknown first chunk {bytes(chunk)!r}")


def image_format(data):
    """The format's name by its signature: one of READABLE's, an unsupported one's, or None."""
    readable = [("JPEG", data[:2] == b"\xff\xd8"), ("PNG", data[:8] == b"\x89PNG\r\n\x1a\n"),
                ("BMP", data[:2] == b"BM"), ("TIFF", data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")),
                ("WebP", data[:4] == b"RIFF" and data[8:12] == b"WEBP")]
    for name, matches in readable:
        if matches:
            return name
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return "HEIF/AVIF"
    if data[:1] == b"P" and data[1:2] in b"1234567" and data[2:3].isspace():
        return "PNM"
    return next((name for signature, name in UNSUPPORTED.items() if data.startswith(signature)), None)


READERS = {"JPEG": _jpeg, "PNG": _png, "BMP": _bmp, "TIFF": _tiff, "WebP": _webp}


def image_size(data):
    """(format, width, height) of one encoded image, read from its header alone.

    ``data``: the encoded bytes, possibly followed by zero padding. Raises
    ``NotAnImage``, ``UnsupportedFormat`` or ``HeaderError``.
    """
    name = image_format(data)
    if name is None:
        raise NotAnImage(f"not an encoded image ({READABLE})")
    if name not in READERS:
        raise UnsupportedFormat(f"unsupported image format {name}; send {READABLE}")
    try:
        width, height = READERS[name](data)
    except (struct.error, IndexError):
        raise HeaderError(f"the {name} header is truncated") from None
    except HeaderError as error:
        raise HeaderError(f"the {name} header is corrupt: {error}") from None
    return name, width, height


@dataclass(frozen=True)
class Limits:
    """The largest image a model accepts, and the model whose config parameters set it."""

    max_pixels: int
    max_side: int = 0  # 0: no limit per side
    owner: str = ""  # the model named in the errors

    @classmethod
    def from_parameters(cls, parameters, owner):
        return cls(int(parameters["max_pixels"]), int(parameters.get("max_side", 0)), owner)

    def parameters(self):
        """The config parameters these limits are read back from."""
        return {"max_pixels": str(self.max_pixels), **({"max_side": str(self.max_side)} if self.max_side else {})}

    def check_size(self, width, height, what):
        """``what`` names the image in the error, e.g. "image 0 of the batch (input IMAGE)"."""
        if width * height > self.max_pixels:
            raise ValueError(f"{what} is {width}x{height} = {width * height} pixels, over this model's limit of "
                             f"{self.max_pixels} pixels (parameter max_pixels of {self.owner})")
        if self.max_side and max(width, height) > self.max_side:
            raise ValueError(f"{what} is {width}x{height} pixels, over this model's limit of {self.max_side} "
                             f"pixels per side (parameter max_side of {self.owner})")

    def check_batch(self, name, images):
        """The encoded images of one input (bytes each), in batch order."""
        for index, image in enumerate(images):
            self.check_encoded(image, f"image {index} of the batch (input {name})")

    def check_encoded(self, data, what):
        """One encoded image (bytes, maybe zero-padded), measured by its header alone."""
        if not data.rstrip(b"\0"):
            raise ValueError(f"{what} is empty (no bytes, or only zero padding)")
        try:
            _, width, height = image_size(data)
        except UnsupportedFormat as error:
            raise UnsupportedFormat(f"{what}: {error}") from None
        except (NotAnImage, HeaderError) as error:  # the wording of DALI's own decoding errors, for clients
            raise ValueError(f"could not decode the image data: {what} ({len(data)} bytes): {error}") from None
        self.check_size(width, height, what)
