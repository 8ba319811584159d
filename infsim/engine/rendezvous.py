"""The collective rendezvous: which instructions of a program form one collective, and when it ends.

Rules: the ``k``-th group collective (``all_reduce``, ``all_gather``, ``reduce_scatter``) that a core issues
on a group meets the ``k``-th of every other member on that group, and all of them must be the same
operation; ``send``/``recv`` pair up by (sender, receiver, tag) in order. A collective starts when its last
member arrives (the instruction's waits are satisfied and its collective queue is free) and ends, for
every member, ``duration_ps`` later as given by the collective timing model
(:mod:`infsim.engine.collectives`) for the largest source and destination sizes among the members. The
members' link bytes add up to the run's link traffic (for energy).

Left out here (the timing model's concern): contention between collectives in flight and with other link
traffic. Also left out: the collective's SBUF/HBM traffic, and members finishing at different times.
"""

from __future__ import annotations

import numpy as np

from infsim.errors import InfsimError
from infsim.isa.opcodes import Op
from infsim.isa.program import Program

from .collectives import CollectiveTiming
from .events import Env


class Rendezvous:
    """One collective being assembled: the members that have arrived (core -> instruction) and its event,
    which fires when the last one arrives (``end`` is then set)."""

    __slots__ = ("op", "members", "arrived", "event", "end", "src_bytes", "dst_bytes", "key")

    def __init__(self, env: Env, key: tuple, op: Op, members: tuple[int, ...]):
        self.key = key
        self.op = op
        self.members = members
        self.arrived: dict[int, int] = {}
        self.event = env.event()
        self.end = 0
        self.src_bytes = 0
        self.dst_bytes = 0


class CollectiveRendezvous:
    """Matches the collective instructions of ``program`` as their cores arrive, and times each collective
    with ``timing`` (see the module docstring). ``src_bytes`` / ``dst_bytes``: per instruction, the sizes it
    contributes (:class:`~infsim.engine.costs.Costs`)."""

    def __init__(self, env: Env, program: Program, timing: CollectiveTiming, src_bytes: np.ndarray,
                 dst_bytes: np.ndarray):
        self.env = env
        self.program = program
        self.timing = timing
        self.src_bytes = src_bytes
        self.dst_bytes = dst_bytes
        self.pending: dict[tuple, Rendezvous] = {}
        self.link_bytes = 0

    def key(self, i: int, core: int, seqs: dict[tuple, int]) -> tuple[tuple, Op, tuple[int, ...]]:
        """The collective that instruction ``i`` of ``core`` belongs to: ``(key, op, members)``; ``seqs`` counts
        the collectives this core's stream has issued so far per group or per (pair, tag)."""
        ins = self.program.instr
        op = Op(int(ins["op"][i]))
        if op in (Op.send, Op.recv):
            peer = int(ins["i0"][i])
            tag = int(ins["i1"][i])
            pair = (core, peer) if op == Op.send else (peer, core)
            base = ("p2p", pair[0], pair[1], tag, op)
            n = seqs.get(base, 0)
            seqs[base] = n + 1
            return ("p2p", pair[0], pair[1], tag, n), op, pair
        gid = int(ins["i0"][i])
        names = list(self.program.groups)
        members = self.program.groups[names[gid]]
        if core not in members:
            raise InfsimError(f"instruction {i}: core {core} runs {op.name} on group "
                              f"'{names[gid]}' but is not a member {members}")
        gbase = ("group", gid)
        n = seqs.get(gbase, 0)
        seqs[gbase] = n + 1
        return ("group", gid, n), op, members

    def arrive(self, i: int, core: int, seqs: dict[tuple, int]) -> tuple[Rendezvous, bool]:
        """Core ``core`` reaches collective instruction ``i`` now. Returns its rendezvous and whether this
        arrival completed it (then ``end`` is set and the event has fired for the members waiting on it)."""
        key, op, members = self.key(i, core, seqs)
        rdv = self.pending.get(key)
        if rdv is None:
            rdv = self.pending[key] = Rendezvous(self.env, key, op, members)
        elif op not in (Op.send, Op.recv) and rdv.op != op:
            raise InfsimError(f"instruction {i}: core {core} issues {op.name} where group peers issue "
                              f"{rdv.op.name} (collective #{key[2]} of the group)")
        rdv.arrived[core] = i
        rdv.src_bytes = max(rdv.src_bytes, int(self.src_bytes[i]))
        rdv.dst_bytes = max(rdv.dst_bytes, int(self.dst_bytes[i]))
        if len(rdv.arrived) < len(members):
            return rdv, False
        dur, link_b = self.timing.duration_ps(rdv.op, members, rdv.src_bytes, rdv.dst_bytes,
                                              self.program.cores_per_chip)
        rdv.end = self.env.now + dur
        self.link_bytes += link_b * (len(members) if op not in (Op.send, Op.recv) else 1)
        del self.pending[key]
        rdv.event.succeed()
        return rdv, True
