"""Products: what the user's labels say a product is, stored once and read by every stage."""
from products.definition import DefectClass, Product, ProductError, load, save
from products.store import DEFAULT_STORE, define, find, in_repository

__all__ = ["DefectClass", "Product", "ProductError", "load", "save", "DEFAULT_STORE", "define", "find",
           "in_repository"]
