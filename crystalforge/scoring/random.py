"""A seeded random scorer, for exercising pipelines and searches without a real model."""

from __future__ import annotations

import hashlib
import math
import struct

import attrs

from .base import Scorer


@attrs.define
class RandomScorer(Scorer):
    """Uniform random score in [0, 1), a deterministic function of (seed, CIF text).

    The same CIF always gets the same score under the same seed, whatever the order or
    batching of the calls, so runs are reproducible. Empty text scores ``nan``.
    """

    seed: int = attrs.field(default=0, metadata={"help": "seed of the pseudo-random scores"})
    lower_is_better: bool = attrs.field(
        default=True, metadata={"help": "whether lower scores are better"}
    )

    def score(self, cif: str) -> float:
        """Return a pseudo-random float in [0, 1) for ``cif``, ``nan`` for empty text."""
        if not cif or not cif.strip():
            return math.nan
        digest = hashlib.blake2b(
            cif.encode("utf-8", "replace"), digest_size=8, key=str(self.seed).encode()[:64]
        ).digest()
        (value,) = struct.unpack("<Q", digest)
        return (value >> 11) / float(1 << 53)
