"""Thin clients for the repository's models: payloads are built and parsed by tritonclient."""
