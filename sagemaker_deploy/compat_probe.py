"""Load the repository's artifacts with an older runtime: run by ``make compat`` inside a separate venv.

    python sagemaker_deploy/compat_probe.py onnx FILE...   # ONNX Runtime of that venv
    python sagemaker_deploy/compat_probe.py dali FILE...   # DALI of that venv

Standalone on purpose: the venv holds only the old runtime (and numpy), not this project.
Prints one line per file, ``PASS`` or ``FAIL`` with the reader's error; exits 1 on any failure.
"""
from __future__ import annotations

import sys


class NeedsGpu(Exception):
    """The probe cannot run here; not a result."""


def probe_onnx(path: str) -> str:
    """Open a session: ONNX Runtime checks the IR version and opsets and resolves every kernel."""
    import onnxruntime

    onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return f"onnxruntime {onnxruntime.__version__}"


def probe_dali(path: str) -> str:
    """Deserialize and build a CPU pipeline; a mixed-decoder pipeline needs libcuda even to deserialize."""
    from nvidia import dali
    from nvidia.dali import Pipeline, types

    with open(path, "rb") as file:
        serialized = file.read()
    if b"mixed" in serialized:
        raise NeedsGpu("its mixed decoder needs a GPU (libcuda) to deserialize")
    try:
        pipeline = Pipeline.deserialize(serialized_pipeline=serialized, device_id=None)
    except TypeError:  # DALI before 2.0 takes no device_id=None, but CPU_ONLY_DEVICE_ID
        pipeline = Pipeline.deserialize(serialized_pipeline=serialized, device_id=types.CPU_ONLY_DEVICE_ID)
    pipeline.build()
    return f"DALI {dali.__version__} (deserialized and built)"


def main(argv: list[str]) -> int:
    kind, paths = argv[0], argv[1:]
    probe = {"onnx": probe_onnx, "dali": probe_dali}[kind]
    failed = 0
    for path in paths:
        try:
            print(f"PASS {path}: read by {probe(path)}")
        except NeedsGpu as reason:
            print(f"SKIP {path}: {reason}")
        except Exception as error:  # the reader's own message is the result
            failed += 1
            print(f"FAIL {path}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
