"""Random numbers for the per-step loops of :mod:`calcml.rl`."""

from __future__ import annotations

__all__ = ["UniformStream"]


class UniformStream:
    """Uniform [0, 1) numbers from a ``numpy.random.Generator``, drawn in blocks of 4096 and
    handed out one at a time as Python floats: one NumPy call per block instead of one per
    step (a per-step ``rng.random()`` costs as much as the rest of the bookkeeping)."""

    __slots__ = ("rng", "buf", "i")

    def __init__(self, rng):
        self.rng, self.buf, self.i = rng, [], 0

    def __call__(self):
        i = self.i
        if i == len(self.buf):
            self.buf = self.rng.random(4096).tolist()
            i = 0
        self.i = i + 1
        return self.buf[i]
