"""End to end on this machine, every stage in order: ``python -m demo`` (``make demo``), in ``__main__.py``."""
