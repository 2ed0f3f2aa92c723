"""What a product is: a name, its classes with their colours, and the size its photos are inspected at.

A product is data, written once from the user's labels (a Ground Truth output manifest
of one labelled photo, or a Lookout for Vision dataset) and read by every stage from
its ``product.json``: dataset generation, LaMa training, classifier training, the
builders (model names, tensor dims, label files), serving, clients and deploy.

Classes keep the colour map's order, background first (index 0), as Ground Truth and
Lookout write it. Class names must be what Lookout's answer can carry
(``[a-zA-Z0-9]``, 1-256 characters): no ``_`` (file names join classes with it) and no
path characters. A product name becomes the prefix of its Triton models
(``<product>_inspection``, ``<product>_parent``, ...).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

FILE = "product.json"
NAME_RULE = re.compile(r"[a-z][a-z0-9-]{0,47}")
CLASS_RULE = re.compile(r"[A-Za-z0-9]{1,256}")
COLOR_RULE = re.compile(r"#[0-9a-fA-F]{6}")
DEFAULT_LONG_SIDE = 320
MIN_SIDE = 32  # the inspection CNNs halve the image five times
# Where a product's defects are: "fixed" places (parts in one pose) or "anywhere" on a surface;
# it chooses the head of the inspection CNNs (builders.defect_architecture).
LAYOUTS = ("fixed", "anywhere")


class ProductError(ValueError):
    """A product that cannot be defined or read; the message names the file and the rule."""


@dataclass(frozen=True)
class DefectClass:
    name: str
    color: str  # "#rrggbb", lower case


@dataclass(frozen=True)
class Product:
    name: str
    background: DefectClass
    classes: tuple[DefectClass, ...]  # component / defect classes, colour-map order, background excluded
    height: int  # the size every photo is resized to for inspection
    width: int
    labels: str = ""  # the labels it was defined from (a manifest or a dataset folder)
    layout: str = LAYOUTS[0]
    # Lookout's decision rules, applied by the pipeline's router: an anomaly whose confidence is
    # under ``min_confidence`` is answered as normal; a class covering less of the image than its
    # share in ``min_area`` ((class, share) pairs) is painted background.
    min_confidence: float = 0.0
    min_area: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        check_name(self.name)
        if self.layout not in LAYOUTS:
            raise ProductError(f"product {self.name}: layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        for entry in (self.background, *self.classes):
            check_class_name(entry.name)
            check_color(entry.color, entry.name)
        names = [entry.name for entry in (self.background, *self.classes)]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ProductError(f"product {self.name}: class names repeat: {', '.join(repeated)}")
        colors = [entry.color.lower() for entry in (self.background, *self.classes)]
        if len(set(colors)) != len(colors):
            raise ProductError(f"product {self.name}: two classes share a colour; each needs its own")
        if min(self.height, self.width) < MIN_SIDE:
            raise ProductError(f"product {self.name}: input size {self.width}x{self.height} is under "
                               f"{MIN_SIDE} pixels per side")
        self._check_rules()

    def _check_rules(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ProductError(f"product {self.name}: min_confidence {self.min_confidence:g} is not between 0 and 1")
        for class_name, share in self.min_area:
            if class_name not in self.class_names:
                raise ProductError(f"product {self.name}: min_area names {class_name!r}, not one of its classes "
                                   f"({', '.join(self.class_names) or 'none'})")
            if not 0.0 <= share <= 1.0:
                raise ProductError(f"product {self.name}: min_area of {class_name} is {share:g}; a share of the "
                                   "image is between 0 and 1")

    def model(self, role: str) -> str:
        """The Triton model name of one of the product's models, e.g. ``pcb_inspection``."""
        return f"{self.name}_{role}"

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.classes)

    @property
    def color_map(self) -> dict[str, str]:
        """Class name -> hex colour, background first."""
        return {entry.name: entry.color for entry in (self.background, *self.classes)}

    def same_classes(self, other: "Product") -> bool:
        return self.color_map == other.color_map

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "min_area": dict(self.min_area)}, indent=2) + "\n"


def check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
        raise ProductError(f"product name {name!r} is not allowed: it names Triton models and SageMaker "
                           "archives, so it must be 1-48 characters of a-z, 0-9 and '-', starting with a letter")


def check_class_name(name: str) -> None:
    if not isinstance(name, str) or not CLASS_RULE.fullmatch(name):
        raise ProductError(f"class name {name!r} is not allowed: Lookout's answer carries class names of "
                           "1-256 characters a-z, A-Z, 0-9 (no '_', spaces or path characters)")


def check_color(color: str, owner: str) -> None:
    if not isinstance(color, str) or not COLOR_RULE.fullmatch(color):
        raise ProductError(f"class {owner}: colour {color!r} is not of the form #rrggbb")


def input_size(height: int, width: int, long_side: int = DEFAULT_LONG_SIDE) -> tuple[int, int]:
    """(height, width) with the photo's aspect kept and its long side ``long_side`` pixels."""
    scale = long_side / max(height, width)
    return max(MIN_SIDE, round(height * scale)), max(MIN_SIDE, round(width * scale))


def from_color_map(name: str, color_map: dict[str, str], photo_height: int, photo_width: int,
                   long_side: int = DEFAULT_LONG_SIDE, labels: str = "", layout: str = LAYOUTS[0]) -> Product:
    """A product from a colour map (background first) and the size of its photos."""
    if not color_map:
        raise ProductError(f"product {name}: the colour map is empty; it needs at least the background")
    entries = [DefectClass(class_name, color.lower()) for class_name, color in color_map.items()]
    height, width = input_size(photo_height, photo_width, long_side)
    return Product(name, entries[0], tuple(entries[1:]), height, width, labels, layout)


def parse(text: str, where: str) -> Product:
    try:
        record = json.loads(text)
        return Product(record["name"], DefectClass(**record["background"]),
                       tuple(DefectClass(**entry) for entry in record["classes"]),
                       int(record["height"]), int(record["width"]), record.get("labels", ""),
                       record.get("layout", LAYOUTS[0]), float(record.get("min_confidence", 0.0)),
                       tuple((name, float(share)) for name, share in record.get("min_area", {}).items()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        if isinstance(error, ProductError):
            raise ProductError(f"{where}: {error}") from None
        raise ProductError(f"{where} is not a product definition ({type(error).__name__}: {error})") from None


def load(path: Path) -> Product:
    """A product from its ``product.json`` or the folder that holds it."""
    path = Path(path)
    file = path / FILE if path.is_dir() else path
    if not file.is_file():
        raise ProductError(f"{file} does not exist: define the product first (python -m products define)")
    return parse(file.read_text(), str(file))


def save(product: Product, folder: Path) -> Path:
    """``folder/product.json``, written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / FILE
    partial = file.with_name(FILE + ".partial")
    partial.write_text(product.to_json())
    partial.replace(file)
    return file
