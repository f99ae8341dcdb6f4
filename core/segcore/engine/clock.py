"""Where a training step's wall-clock time goes: data, augmentation, forward (with the loss), backward, optimizer
and the rest (logging, progress, checkpoints), timed by the trainer when asked (`segcore bench --trainer`)."""

from __future__ import annotations

__all__ = ["PHASES", "StepClock"]

import time

import torch

PHASES = ("data", "augment", "forward", "backward", "optimizer", "other")


class StepClock:
    """Seconds per phase of the training loop, summed over the steps after the first *skip* (compiles, caches and
    allocator warm-up stay out). Off by default: a lap is then one attribute test. On CUDA a lap synchronises the
    device first, so the kernels a phase queued count in it (timing costs the overlap it measures away)."""

    def __init__(self, device: torch.device | str = "cpu", *, enabled: bool = False, skip: int = 0) -> None:
        self.device = torch.device(device)
        self.enabled, self.skip = enabled, skip
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.steps = 0  # steps timed
        self._seen = 0  # steps ended, timed or not
        self._last = time.perf_counter()

    def start(self) -> None:
        """The next lap counts from now (the loop begins)."""
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        """The time since the previous lap goes to *phase*."""
        if not self.enabled:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if self._seen >= self.skip:
            self.seconds[phase] += now - self._last
        self._last = now

    def step_done(self) -> None:
        """An optimizer step and its bookkeeping ended (the rest since the last lap is "other")."""
        if not self.enabled:
            return
        self.lap("other")
        self._seen += 1
        self.steps += self._seen > self.skip

    def shares(self) -> dict[str, float]:
        """Each phase's share of the timed total (0 when nothing was timed)."""
        total = sum(self.seconds.values())
        return {k: (v / total if total else 0.0) for k, v in self.seconds.items()}
