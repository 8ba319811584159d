"""SBUF/PSUM allocation with liveness.

A lowering declares *roles* (``x``, ``q``, ``h``, weight ring, ...) with a size in bytes per partition
and a live range over the phases of a layer (norm, qkv, attention, ...). :func:`allocate` places them
first-fit by decreasing size so that roles whose live ranges overlap never share bytes, while roles
that are never live at the same time (the attention scores and the MLP intermediate, say) reuse the
same memory. Too little memory raises :class:`LoweringError` naming the roles and the bytes needed
versus available.
"""

from __future__ import annotations

from dataclasses import dataclass

from infsim.errors import InfsimError


class LoweringError(InfsimError):
    """A model cannot be lowered onto the chip (does not fit, unsupported shape)."""


@dataclass(frozen=True)
class Role:
    name: str
    nbytes: int  # per partition
    first: int  # first phase live
    last: int  # last phase live (inclusive)
    align: int = 64


def allocate(roles: list[Role], capacity: int, what: str = "SBUF") -> tuple[dict[str, int], int]:
    """Offsets (bytes within a partition) for every role, and the peak bytes used."""
    placed: list[tuple[Role, int]] = []
    out: dict[str, int] = {}
    for r in sorted(roles, key=lambda r: (-r.nbytes, r.name)):
        if r.nbytes <= 0:
            out[r.name] = 0
            continue
        busy = sorted((off, off + p.nbytes) for p, off in placed if not (p.last < r.first or r.last < p.first))
        off = 0
        for lo, hi in busy:
            if off + r.nbytes <= lo:
                break
            off = max(off, -(-hi // r.align) * r.align)
        placed.append((r, off))
        out[r.name] = off
    peak = max((off + r.nbytes for r, off in placed), default=0)
    if peak > capacity:
        big = ", ".join(f"{r.name} {r.nbytes}" for r in sorted(roles, key=lambda r: -r.nbytes)[:5])
        raise LoweringError(f"{what}: needs {peak} bytes per partition, {capacity} available (largest: {big})")
    return out, peak
