"""Where products live: ``<store>/<name>/product.json``, and a copy in each repository that serves one.

The store (default ``build/products``) is where a product is defined and where its
stage outputs may go (its LaMa checkpoint, say). A model repository carries a copy in the
product's pipeline folder (``<name>_inspection/product.json``), so that a rebuild finds
every product it serves and keeps their trained versions, and an archive deployed to
SageMaker carries the definition of what it inspects.
"""
from __future__ import annotations

from pathlib import Path

from products.definition import FILE, Product, ProductError, load, save

DEFAULT_STORE = Path("build/products")
PIPELINE_ROLE = "inspection"


def define(product: Product, store: Path = DEFAULT_STORE) -> Path:
    """Write the product into the store; a product of that name with other classes is refused."""
    folder = Path(store) / product.name
    if (folder / FILE).is_file():
        existing = load(folder)
        if not existing.same_classes(product):
            raise ProductError(f"product {product.name} already exists in {folder / FILE} with other classes "
                               f"({', '.join(existing.color_map)}); these labels have {', '.join(product.color_map)}. "
                               "Choose another name, or remove that product first")
    return save(product, folder)


def find(reference: str | Path, store: Path = DEFAULT_STORE) -> Product:
    """A product by its file or folder, or by its name in the store."""
    path = Path(reference)
    if path.exists():
        return load(path)
    return load(Path(store) / str(reference))


def in_repository(repository: Path) -> list[Product]:
    """The products a built repository serves (from the copies in their pipeline folders), by name."""
    repository = Path(repository)
    if not repository.is_dir():
        return []
    found = [load(path) for path in sorted(repository.glob(f"*_{PIPELINE_ROLE}/{FILE}"))]
    return sorted(found, key=lambda product: product.name)


def repository_product(repository: Path, name: str) -> Product:
    """One product a repository serves; ProductError lists the ones it has."""
    for product in in_repository(repository):
        if product.name == name:
            return product
    known = ", ".join(p.name for p in in_repository(repository)) or "none"
    raise ProductError(f"{repository} serves no product {name!r} (products there: {known}); build it with "
                       f"python -m builders --out {repository} --product {name}")
