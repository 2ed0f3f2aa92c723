"""Guards: the first step of every ensemble, which measures images by their headers before any decoding.

A PNG of a few hundred kilobytes can declare 20000x20000 pixels; decoded, that is over a
gigabyte. Triton's DALI backend (``gpu`` target) decodes whatever reaches it and has no
way to refuse one request with an error of its own, so each ensemble starts with a guard:
a python-backend step (both targets, as the ensembles are the same on both) that reads
the header of every encoded image (``runners/image_headers.py``) and either refuses the
request with a 400 naming the size and the limit, or passes the bytes on unchanged.

The limits are config parameters of the guard (``max_pixels``, and ``max_side`` where a
model has one), so a deployment can lower them without a rebuild.

The guard is also the pipeline's admission gate (``runners/admission.py``): parameter
``admission_rps``, the capacity when built with ``--admission-gate`` (``load_shedding.admission_rate``; 0: no gate),
is the most requests/s it lets into the pipeline; it refuses the rest at once, before reading
them, as a full queue would (HTTP 503 "Exceeds maximum queue size").
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from builders.declaration import BuildOptions, EnsembleStep, ModelDeclaration, Serving, Tensor
from builders.load_shedding import admission_rate
from builders.runners.image_headers import Limits

RUNNER = "image_guard_step"


@dataclass(frozen=True)
class ImageGuard:
    """One guard: its model name, the encoded-image inputs it checks, and their limits."""

    name: str
    inputs: tuple[Tensor, ...]  # the ensemble's encoded-image inputs, UINT8 [-1]
    max_pixels: int
    max_batch_size: int
    max_side: int = 0  # 0: no limit per side

    @property
    def limits(self) -> Limits:
        return Limits(self.max_pixels, self.max_side, owner=self.name)

    def checked(self, tensor: Tensor) -> str:
        """The name, in the guard and in the ensemble, of ``tensor`` once checked."""
        return f"CHECKED_{tensor.name}"

    def step(self) -> EnsembleStep:
        """The ensemble's first step: its inputs in, the same bytes out under their checked names."""
        return EnsembleStep(self.name, {t.name: t.name for t in self.inputs},
                            {self.checked(t): self.checked(t) for t in self.inputs})

    def declare(self, options: BuildOptions) -> ModelDeclaration:
        # Ragged batching and no queue delay: requests of any length are merged when they are
        # already waiting, and none waits for company (a header takes microseconds to read).
        step = Serving(backend="python", instance_kind="KIND_CPU", runner=RUNNER,
                       helpers=("batching", "image_headers", "admission"))
        admission = admission_rate(options.admission_gate, options.capacity_rps)
        return ModelDeclaration(
            name=self.name, inputs=[replace(t, allow_ragged_batch=True) for t in self.inputs],
            outputs=[Tensor(self.checked(t), t.data_type, t.dims) for t in self.inputs],
            max_batch_size=self.max_batch_size, serving={"gpu": step, "cpu": step},
            dynamic_batching_delay_us=0,
            parameters={**self.limits.parameters(), "admission_rps": f"{admission:g}"})
