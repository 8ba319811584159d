"""The collective rendezvous: which instructions of a program form one collective, and when it ends.

Rules: the ``k``-th group collective (``all_reduce``, ``all_gather``, ``reduce_scatter``) that a collective
stream ``(core, cc, queue)`` issues on a group meets the ``k``-th of every other member on that group, and all
of them must be the same operation; ``send``/``recv`` pair up by (sender, receiver, tag) in order. A
collective starts when its last member arrives (the instruction's waits are satisfied and its collective
queue is free) and ends, for every member, ``duration_ps`` later as given by the collective timing model
(:mod:`infsim.engine.collectives`) for the largest source and destination sizes among the members. The
members' link bytes add up to the run's link traffic (for energy).

Which instructions meet is static (:func:`plan_collectives`, the one place both engines take it from), so a
program whose collectives cannot match (a core outside the group, different operations, a core taking part
twice, a send to itself) is an error before the run. :class:`CollectiveRendezvous` assembles the collectives
as their members arrive (the simpy reference engine); the numba engine takes the plan with every
collective's duration asked from the model up front (:meth:`CollectivePlan.durations`).

Left out here (the timing model's concern): contention between collectives in flight and with other link
traffic. Also left out: the collective's SBUF/HBM traffic, and members finishing at different times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from infsim.errors import InfsimError
from infsim.isa.opcodes import Engine, Op
from infsim.isa.program import Program

from .collectives import CollectiveTiming
from .costs import IS_COLLECTIVE
from .events import Env

if TYPE_CHECKING:
    from infsim.engine.costs import SparseColumn

_P2P = (Op.send, Op.recv)


@dataclass
class CollectivePlan:
    """Every collective of a program: ``rdv_of[i]`` is the index of instruction ``i``'s collective (-1 for
    instructions that are not collectives); per collective its operation, member cores (for send/recv:
    ``(sender, receiver)``), member instructions and the largest source / destination sizes."""

    rdv_of: np.ndarray
    ops: list[Op] = field(default_factory=list)
    members: list[tuple[int, ...]] = field(default_factory=list)
    instrs: list[list[int]] = field(default_factory=list)
    src_bytes: list[int] = field(default_factory=list)
    dst_bytes: list[int] = field(default_factory=list)

    def durations(self, timing: CollectiveTiming, cores_per_chip: int) -> tuple[np.ndarray, np.ndarray]:
        """Per collective, its duration (ps) from ``timing`` and the link bytes it adds to the run (the
        model's per-member bytes times the members of a group collective; once for send/recv).
        ``duration_ps`` is a function of its arguments (the :class:`CollectiveTiming` contract), so asking
        before the run gives the times the rendezvous gives during it; equal arguments are asked once."""
        n = len(self.ops)
        dur = np.zeros(n, dtype=np.int64)
        link = np.zeros(n, dtype=np.int64)
        memo: dict[tuple, tuple[int, int]] = {}
        for r in range(n):
            args = (self.ops[r], self.members[r], self.src_bytes[r], self.dst_bytes[r], cores_per_chip)
            if args not in memo:
                memo[args] = timing.duration_ps(*args)
            d, lb = memo[args]
            dur[r] = d
            link[r] = lb * (len(self.members[r]) if self.ops[r] not in _P2P else 1)
        return dur, link


def plan_collectives(program: Program, src_bytes: np.ndarray | SparseColumn,
                      dst_bytes: np.ndarray | SparseColumn) -> CollectivePlan:
    """Match the collective instructions of ``program`` (module docstring); ``src_bytes`` / ``dst_bytes``:
    per instruction, the sizes it contributes (:class:`~infsim.engine.costs.Costs`)."""
    ins = program.instr
    plan = CollectivePlan(np.full(len(ins), -1, dtype=np.int32))
    names = list(program.groups)
    index: dict[tuple, int] = {}
    for (core, eng, _q), idx in program.streams().items():
        if eng != int(Engine.cc):
            continue
        seqs: dict[tuple, int] = {}
        sel = idx[IS_COLLECTIVE[ins["op"][idx]]]
        for i in sel.tolist():
            op = Op(int(ins["op"][i]))
            if op in _P2P:
                peer, tag = int(ins["i0"][i]), int(ins["i1"][i])
                if peer == core:
                    raise InfsimError(f"instruction {i}: core {core} runs {op.name} with itself (peer {peer})")
                pair = (core, peer) if op == Op.send else (peer, core)
                base: tuple = ("p2p", pair, tag, op)
                members: tuple[int, ...] = pair
                what = f"{op.name} #{seqs.get(base, 0)} from core {pair[0]} to core {pair[1]} (tag {tag})"
            else:
                gid = int(ins["i0"][i])
                members = program.groups[names[gid]]
                if core not in members:
                    raise InfsimError(f"instruction {i}: core {core} runs {op.name} on group "
                                      f"'{names[gid]}' but is not a member {members}")
                base = ("group", gid)
                what = f"collective #{seqs.get(base, 0)} of group '{names[gid]}'"
            n = seqs.get(base, 0)
            seqs[base] = n + 1
            key = (base[:3], n) if op in _P2P else (base, n)
            r = index.get(key)
            if r is None:
                r = index[key] = len(plan.ops)
                plan.ops.append(op)
                plan.members.append(members)
                plan.instrs.append([])
                plan.src_bytes.append(0)
                plan.dst_bytes.append(0)
            elif op not in _P2P and plan.ops[r] != op:
                first = plan.instrs[r][0]
                raise InfsimError(f"instruction {i}: core {core} issues {op.name} where core "
                                  f"{int(ins['core'][first])} issues {plan.ops[r].name} ({what})")
            cores = [int(ins["core"][j]) for j in plan.instrs[r]]
            if core in cores:
                raise InfsimError(f"instruction {i}: core {core} takes part twice in {what} (instructions "
                                  f"{plan.instrs[r][cores.index(core)]} and {i})")
            plan.instrs[r].append(i)
            plan.rdv_of[i] = r
            plan.src_bytes[r] = max(plan.src_bytes[r], int(src_bytes[i]))
            plan.dst_bytes[r] = max(plan.dst_bytes[r], int(dst_bytes[i]))
    return plan


class Rendezvous:
    """One collective being assembled: the members that have arrived (core -> instruction) and its event,
    which fires when the last one arrives (``end`` is then set)."""

    __slots__ = ("index", "op", "members", "arrived", "event", "end")

    def __init__(self, env: Env, index: int, op: Op, members: tuple[int, ...]):
        self.index = index
        self.op = op
        self.members = members
        self.arrived: dict[int, int] = {}
        self.event = env.event()
        self.end = 0


class CollectiveRendezvous:
    """Assembles the collectives of ``program`` (matched by :func:`plan_collectives`) as their members arrive,
    and times each with ``timing`` when its last member arrives (see the module docstring)."""

    def __init__(self, env: Env, program: Program, timing: CollectiveTiming, src_bytes: np.ndarray | SparseColumn,
                 dst_bytes: np.ndarray | SparseColumn):
        self.env = env
        self.program = program
        self.timing = timing
        self.plan = plan_collectives(program, src_bytes, dst_bytes)
        self.pending: dict[int, Rendezvous] = {}
        self.link_bytes = 0

    def arrive(self, i: int) -> tuple[Rendezvous, bool]:
        """Collective instruction ``i`` reaches the head of its stream now (waits satisfied, stream free).
        Returns its rendezvous and whether this arrival completed it (then ``end`` is set and the event has
        fired for the members waiting on it)."""
        plan = self.plan
        r = int(plan.rdv_of[i])
        rdv = self.pending.get(r)
        if rdv is None:
            rdv = self.pending[r] = Rendezvous(self.env, r, plan.ops[r], plan.members[r])
        rdv.arrived[int(self.program.instr["core"][i])] = i
        if len(rdv.arrived) < len(rdv.members):
            return rdv, False
        dur, link_b = self.timing.duration_ps(rdv.op, rdv.members, plan.src_bytes[r], plan.dst_bytes[r],
                                              self.program.cores_per_chip)
        rdv.end = self.env.now + dur
        self.link_bytes += link_b * (len(rdv.members) if rdv.op not in _P2P else 1)
        del self.pending[r]
        rdv.event.succeed()
        return rdv, True
