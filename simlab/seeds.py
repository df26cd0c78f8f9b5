"""Per-purpose seeds: every random stream of a run is a generator seeded from ``(cfg.seed, purpose, ...)``.

Independent purposes (``"init"``, ``"noise"``, ``"shuffle", epoch``, ``"augment", epoch, rank``, ...)
get independent 63-bit seeds from one config seed, so a stream can be re-derived on its own: a resumed
run draws exactly what the uninterrupted run would have drawn, and every DDP rank draws the same label
noise. Standard library only.
"""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one purpose, derived from the config seed (independent streams per purpose)."""
    text = "/".join(map(str, (seed, *parts)))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1
