"""``python -m products``: define a product from its labels, and show the products there are.

    python -m products define --name knob --labels my-labels/output.manifest [--long-side 320] [--layout L]
    python -m products define --name cookie --lookout my-lookout-dataset/ [--long-side 320] [--layout L]
    python -m products rules NAME [--min-confidence P] [--min-area CLASS=SHARE ...]
    python -m products show [NAME]

``--labels``: a SageMaker Ground Truth semantic-segmentation output manifest of one
labelled photo (its colour map gives the classes, the photo the size). ``--lookout``: an
Amazon Lookout for Vision dataset (manifests or ``normal/`` and ``anomaly/`` folders);
its anomaly masks' colour maps give the classes (none without masks), its images the size.
``--layout``: ``fixed`` when the product's parts sit in fixed places of the photo (the
default for ``--labels``), ``anywhere`` when defects can be anywhere on it (the default
for ``--lookout``). The definition goes to ``<store>/<name>/product.json`` (store:
``build/products``). ``rules``: Lookout's decision rules, served by the product's pipeline
once the repository is rebuilt with ``--product NAME`` (docs/lookout-answer.md).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from products.definition import DEFAULT_LONG_SIDE, LAYOUTS, Product, ProductError, from_color_map, load, save
from products.store import DEFAULT_STORE, define


def from_labels(name: str, manifest: Path, long_side: int, layout: str = "fixed") -> Product:
    from defect_data import groundtruth

    try:
        labelled = groundtruth.read(manifest)
    except groundtruth.LabelError as error:
        raise ProductError(f"{manifest}: {error}") from None
    height, width = labelled.image.shape[:2]
    return from_color_map(name, labelled.color_map, height, width, long_side, str(Path(manifest).resolve()), layout)


def from_lookout(name: str, folder: Path, long_side: int, layout: str = "anywhere") -> Product:
    from defect_data import lookout

    try:
        dataset = lookout.read_dataset(folder)
        height, width = lookout.check_rules(dataset, lookout.Reader())
        color_map = lookout.union_color_map(dataset) or {"BACKGROUND": "#ffffff"}
    except lookout.LookoutError as error:
        raise ProductError(str(error)) from None
    return from_color_map(name, color_map, height, width, long_side, str(Path(folder).resolve()), layout)


def with_rules(product: Product, min_confidence: float | None, min_area: list[str] | None) -> Product:
    """The product with the rules given (None: kept as they are)."""
    changes = {} if min_confidence is None else {"min_confidence": min_confidence}
    if min_area is not None:
        changes["min_area"] = tuple(_share(pair) for pair in min_area)
    return replace(product, **changes)


def _share(pair: str) -> tuple[str, float]:
    name, separator, share = pair.partition("=")
    try:
        if not name or not separator:
            raise ValueError(pair)
        return name, float(share)
    except ValueError:
        raise ProductError(f"--min-area {pair!r}: write CLASS=SHARE with SHARE a number, e.g. crack=0.001") from None


def describe(product: Product) -> str:
    classes = ", ".join(f"{c.name} {c.color}" for c in product.classes) or "none (anomaly or normal only)"
    return (f"{product.name}: inspected at {product.width}x{product.height}, layout {product.layout}; "
            f"background {product.background.name} "
            f"{product.background.color}; classes: {classes}; labels {product.labels or '-'}; rules: "
            f"min confidence {product.min_confidence:g}, min area {dict(product.min_area) or '-'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m products", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="where products are kept")
    commands = parser.add_subparsers(dest="command", required=True)
    definer = commands.add_parser("define", help="write a product definition from its labels")
    definer.add_argument("--name", required=True, help="a-z, 0-9 and '-': it names the product's models")
    source = definer.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", type=Path, help="a Ground Truth output.manifest of one labelled photo")
    source.add_argument("--lookout", type=Path, help="a Lookout for Vision dataset (folder or manifest)")
    definer.add_argument("--long-side", type=int, default=DEFAULT_LONG_SIDE,
                         help="pixels of the inspected image's long side (aspect kept)")
    definer.add_argument("--layout", choices=LAYOUTS,
                         help="fixed: parts in fixed places (default for --labels); anywhere: defects can be "
                              "anywhere (default for --lookout)")
    ruler = commands.add_parser("rules", help="set Lookout's decision rules of a defined product (then rebuild "
                                              "the repository with --product NAME)")
    ruler.add_argument("name")
    ruler.add_argument("--min-confidence", type=float,
                       help="an anomaly with a lower confidence (0-1) is answered as normal")
    ruler.add_argument("--min-area", nargs="*", metavar="CLASS=SHARE",
                       help="a class covering less of the image than SHARE (0-1) is left out of the answer; "
                            "no pairs: clear them")
    shower = commands.add_parser("show", help="the products in the store")
    shower.add_argument("name", nargs="?")
    args = parser.parse_args(argv)
    try:
        if args.command == "define":
            layout = {"layout": args.layout} if args.layout else {}
            product = (from_labels(args.name, args.labels, args.long_side, **layout) if args.labels
                       else from_lookout(args.name, args.lookout, args.long_side, **layout))
            path = define(product, args.store)
            print(describe(product))
            print(f"product definition written to {path}")
            return 0
        if args.command == "rules":
            product = with_rules(load(args.store / args.name), args.min_confidence, args.min_area)
            print(describe(product))
            print(f"rules written to {save(product, args.store / args.name)}; rebuild the repository with "
                  f"--product {product.name} to serve them")
            return 0
        folders = [args.store / args.name] if args.name else sorted(p.parent for p in args.store.glob("*/product.json"))
        for folder in folders:
            print(describe(load(folder)))
        return 0
    except ProductError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
