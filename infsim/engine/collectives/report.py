"""Which collectives a run performed and which algorithm each ran: the summary that ``infsim run --json``
(``collectives``), ``infsim sim --json`` and traces report.

:func:`program_collectives` lists a program's collectives (one entry per collective instruction: op,
members, sizes); :func:`summarize` groups identical ones and asks the collective model for the algorithm
(a model with an ``algorithm(op, members, src_bytes, dst_bytes, cores_per_chip)`` method, as
:class:`~.link.LinkCollectives` has; ``unknown`` otherwise) and the duration. Nothing here times anything
the model does not; it only reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from infsim.isa.opcodes import Op
from infsim.isa.program import Program

from ..costs import IS_COLLECTIVE
from . import CollectiveTiming

if TYPE_CHECKING:
    from infsim.engine.costs import SparseColumn

Call = tuple[str, tuple[int, ...], int, int]  # (op name, members, src_bytes, dst_bytes)


def algorithm_of(model: CollectiveTiming, call: Call, cores_per_chip: int) -> str:
    """The algorithm ``model`` runs for ``call`` (``unknown`` when the model does not say)."""
    fn = getattr(model, "algorithm", None)
    if not callable(fn):
        return "unknown"
    return str(fn(call[0], call[1], call[2], call[3], cores_per_chip))


def summarize(model: CollectiveTiming, calls: Iterable[Call], cores_per_chip: int, lnc: int = 1,
              per_member: bool = True) -> list[dict[str, Any]]:
    """One row per distinct collective: ``op``, ``bytes`` (all_gather: the gathered result; others: each
    member's input), ``ranks`` (physical cores), ``logical_ranks``, ``algorithm``, ``time_us`` and ``count``
    (how many times the step runs it). ``per_member``: ``calls`` holds one entry per member's instruction
    (a program), so each collective is counted once."""
    seen: dict[Call, int] = {}
    for c in calls:
        seen[c] = seen.get(c, 0) + 1
    rows = []
    for (op, members, src, dst), n in seen.items():
        ps, _ = model.duration_ps(Op[op], members, src, dst, cores_per_chip)
        group_collective = op not in ("send", "recv")
        count = n // len(members) if per_member and group_collective else n
        rows.append({"op": op, "bytes": dst if op == "all_gather" else src, "ranks": len(members),
                     "logical_ranks": len(members) // lnc if len(members) % lnc == 0 else len(members),
                     "algorithm": algorithm_of(model, (op, members, src, dst), cores_per_chip),
                     "time_us": ps / 1e6, "count": count})
    rows.sort(key=lambda r: (r["op"], r["bytes"], r["ranks"]))
    return rows


def program_collectives(program: Program, src_bytes: np.ndarray | SparseColumn,
                         dst_bytes: np.ndarray | SparseColumn) -> dict[int, Call]:
    """Every collective instruction of ``program``: index -> (op, members, src_bytes, dst_bytes)."""
    ins = program.instr
    op = ins["op"]
    idx = np.flatnonzero(IS_COLLECTIVE[op])
    names = list(program.groups)
    out: dict[int, Call] = {}
    for i in idx.tolist():
        o = Op(int(op[i]))
        core = int(ins["core"][i])
        members: tuple[int, ...]
        if o in (Op.send, Op.recv):
            peer = int(ins["i0"][i])
            members = (core, peer) if o == Op.send else (peer, core)
        else:
            members = tuple(program.groups[names[int(ins["i0"][i])]])
        out[i] = (o.name, members, int(src_bytes[i]), int(dst_bytes[i]))
    return out
