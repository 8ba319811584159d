"""Collective algorithms as step schedules over rank indices: who sends how many bytes to whom at which
step. Topology-free: the ranks arrive grouped by chip (``chips[i]`` = the rank indices on the ``i``-th chip
of the group, chips in ring order), and :mod:`.schedule` routes and times the messages.

``S`` is the collective's size (all_reduce / reduce_scatter: each rank's input; all_gather: the gathered
output), ``p`` the number of ranks, ``q`` the number of chips, ``c`` the ranks per chip. The algorithms of
the Neuron runtime follow its intra-node collectives page ([RT-INTRA], see ``docs/references.md``):

* ``ring`` (the runtime's fallback): reduce-scatter then all-gather around one ring, ``p - 1`` steps each.
* ``mesh``: every rank writes directly to its peers (remote chips through the chips in between), a constant
  number of steps however many ranks: reduce-scatter = an intra-chip step (rank ``j`` of a chip collects
  column ``j`` of every local rank, ``S / c`` each) then an inter-chip step (rank ``j`` sends its ``S / p``
  share of the column to rank ``j`` of every other chip); all-gather = the inter-chip step then the
  intra-chip step; all-reduce = both (4 steps; 2 on one chip or with one rank per chip). Ranks spread
  unevenly over chips use the flat form: every rank sends ``S / p`` to every other, twice for all-reduce.
* ``rdh`` (recursive doubling / halving): the chips of the group seen as a hypercube (``labels``: each chip's
  corner; on a 4x4 torus each axis of 4 is a 2-cube under Gray-code labels, so every exchange is one hop).
  reduce-scatter = the intra-chip step, then ``log2 q`` halving exchanges between the same-index ranks of
  partner chips (``S / c / 2``, ``S / c / 4``, ..., ``S / p``); all-gather = the doubling exchanges
  (``S / p`` up to ``S / 2c``) then the intra-chip step. Needs a power-of-two chip count and the same
  ranks on every chip.
* ``kangaring``: the ranks of each chip paired; the first of a pair (the primary) is in a ring of ``p / 2``
  ranks on the pair's data, so half the hops; the secondary idles. The primary reads its secondary's part
  of each chunk in its own step (an HBM read on the chip, not a transfer); in the all-gather phase each
  primary's one write lands in the next primary and in its own secondary (the runtime's duplication write:
  one read, two writes), modelled as a second transfer of the same step marked ``dup`` that takes none of
  the primary's egress. Needs every chip's ranks in pairs.
* ``bidir``, ``tree``, ``hier``: infsim's own variants (two counter-rotating rings; binomial tree; intra-chip
  ring then one inter-chip ring per local index), kept for comparison.

Left out: the single-step mesh all-reduce (every rank broadcasts its whole buffer; the runtime documents its
crossover only across nodes), the intra-chip routing of RDH axis exchanges, and the duplication write's saving
in HBM touches (collective buffers' HBM traffic is not modelled).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from infsim.errors import InfsimError

Chips = Sequence[Sequence[int]]


@dataclass(frozen=True)
class Transfer:
    """One message: at algorithm step ``step`` rank ``src`` sends ``nbytes`` to rank ``dst``."""

    step: int
    src: int
    dst: int
    nbytes: float
    reduce: bool = False  # the receiver reduces the data into its own before using it
    channel: int = 0  # independent pipelines of one rank (bidir's two directions); dependencies stay within one
    shared: bool = False  # between the physical cores of one logical core, through their shared HBM
    dup: bool = False  # the second write of a duplication write: rides on the sender's other transfer of the
    #                    step (one read, two writes), so it takes no egress time of its own


def ring_rs(ranks: Sequence[int], msg: float, step0: int, reduce: bool, channel: int = 0) -> list[Transfer]:
    """``n - 1`` ring steps, every rank sending ``msg`` to its successor (a reduce-scatter when ``reduce``,
    else an all-gather)."""
    n = len(ranks)
    return [Transfer(step0 + s, ranks[i], ranks[(i + 1) % n], msg, reduce, channel)
            for s in range(n - 1) for i in range(n)]


def ring_ar(ranks: Sequence[int], total: float, step0: int, channel: int = 0) -> list[Transfer]:
    n = len(ranks)
    return (ring_rs(ranks, total / n, step0, True, channel)
            + ring_rs(ranks, total / n, step0 + n - 1, False, channel))


def _levels(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


def _binomial_up(ranks: Sequence[int], size: Callable[[int, int], float], step0: int,
                 reduce: bool) -> list[Transfer]:
    """Reduce / gather toward ``ranks[0]``: at level k, index i (i mod 2^(k+1) == 2^k) sends its subtree
    ``[i, min(i + 2^k, n))`` to ``i - 2^k``."""
    n, out = len(ranks), []
    for k in range(_levels(n)):
        h = 1 << k
        for i in range(h, n, 2 * h):
            out.append(Transfer(step0 + k, ranks[i], ranks[i - h], size(i, min(i + h, n)), reduce))
    return out


def _binomial_down(ranks: Sequence[int], size: Callable[[int, int], float], step0: int) -> list[Transfer]:
    """Broadcast / scatter from ``ranks[0]``: levels in reverse, index i (multiple of 2^(k+1)) sends the
    subtree ``[i + 2^k, min(i + 2^(k+1), n))`` to ``i + 2^k``."""
    n, out = len(ranks), []
    L = _levels(n)
    for j, k in enumerate(reversed(range(L))):
        h = 1 << k
        for i in range(0, n, 2 * h):
            if i + h < n:
                out.append(Transfer(step0 + j, ranks[i], ranks[i + h], size(i + h, min(i + 2 * h, n))))
    return out


def _flat(chips: Chips) -> list[int]:
    return [r for g in chips for r in g]


def _equal(chips: Chips) -> int | None:
    """Ranks per chip when every chip holds the same number, else None."""
    sizes = {len(g) for g in chips}
    return sizes.pop() if len(sizes) == 1 else None


def ring(op: str, chips: Chips, S: float) -> list[Transfer]:
    idx = _flat(chips)
    if op == "all_reduce":
        return ring_ar(idx, S, 0)
    return ring_rs(idx, S / len(idx), 0, op == "reduce_scatter")  # all_gather / reduce_scatter


def bidir(op: str, chips: Chips, S: float) -> list[Transfer]:
    idx = _flat(chips)
    rev, p = idx[::-1], len(idx)
    if op == "all_reduce":
        return ring_ar(idx, S / 2, 0, 0) + ring_ar(rev, S / 2, 0, 1)
    red = op == "reduce_scatter"
    return ring_rs(idx, S / 2 / p, 0, red, 0) + ring_rs(rev, S / 2 / p, 0, red, 1)


def tree(op: str, chips: Chips, S: float) -> list[Transfer]:
    idx = _flat(chips)
    p = len(idx)
    full: Callable[[int, int], float] = lambda lo, hi: S  # noqa: E731
    shard: Callable[[int, int], float] = lambda lo, hi: (hi - lo) * S / p  # noqa: E731
    L = _levels(p)
    if op == "all_reduce":
        return _binomial_up(idx, full, 0, True) + _binomial_down(idx, full, L)
    if op == "all_gather":
        return _binomial_up(idx, shard, 0, False) + _binomial_down(idx, full, L)
    return _binomial_up(idx, full, 0, True) + _binomial_down(idx, shard, L)


def hier(op: str, chips: Chips, S: float) -> list[Transfer]:
    c = _equal(chips)
    if c is None:
        raise InfsimError(f"hier needs the same number of ranks on every chip, got {sorted({len(g) for g in chips})}")
    q, p = len(chips), c * len(chips)
    # one inter-chip ring per local core index; odd ones run the other way round, so both directions of every
    # link carry data
    rings = [[g[j] for g in (chips if j % 2 == 0 else chips[::-1])] for j in range(c)]
    tr: list[Transfer] = []
    if op == "all_reduce":
        for g in chips:
            tr += ring_rs(g, S / c, 0, True)
        for r in rings:
            tr += ring_ar(r, S / c, c - 1)
        for g in chips:
            tr += ring_rs(g, S / c, c - 1 + 2 * (q - 1), False)
    elif op == "all_gather":
        for r in rings:
            tr += ring_rs(r, S / p, 0, False)
        for g in chips:
            tr += ring_rs(g, S / c, q - 1, False)
    else:
        for g in chips:
            tr += ring_rs(g, S / c, 0, True)
        for r in rings:
            tr += ring_rs(r, S / p, c - 1, True)
    return tr


def _intra(chips: Chips, size: float, step: int, reduce: bool) -> list[Transfer]:
    """Every rank sends ``size`` bytes to every other rank of its chip (one step)."""
    return [Transfer(step, i, j, size, reduce) for g in chips for i in g for j in g if i != j]


def _inter_all(chips: Chips, size: float, step: int, reduce: bool) -> list[Transfer]:
    """Rank ``j`` of every chip sends ``size`` to rank ``j`` of every other chip (one step)."""
    return [Transfer(step, a[j], b[j], size, reduce)
            for j in range(len(chips[0])) for a in chips for b in chips if a is not b]


def mesh(op: str, chips: Chips, S: float) -> list[Transfer]:
    c = _equal(chips)
    idx = _flat(chips)
    p = len(idx)
    if c is None:  # uneven placement: every rank writes to every other directly
        flat = [Transfer(0, i, j, S / p, op != "all_gather") for i in idx for j in idx if i != j]
        if op == "all_reduce":
            flat += [Transfer(1, i, j, S / p) for i in idx for j in idx if i != j]
        return flat
    q = len(chips)
    tr: list[Transfer] = []
    s = 0
    if op in ("all_reduce", "reduce_scatter"):
        if c > 1:
            tr += _intra(chips, S / c, s, True)
            s += 1
        if q > 1:
            tr += _inter_all(chips, S / p, s, True)
            s += 1
    if op in ("all_reduce", "all_gather"):
        if q > 1:
            tr += _inter_all(chips, S / p, s, False)
            s += 1
        if c > 1:
            tr += _intra(chips, S / c, s, False)
    return tr


def rdh(op: str, chips: Chips, S: float, labels: Sequence[int]) -> list[Transfer]:
    c = _equal(chips)
    q = len(chips)
    if c is None or q & (q - 1):
        raise InfsimError(f"rdh needs a power-of-two number of chips with the same ranks on each, got {q} chips "
                          f"with {sorted({len(g) for g in chips})} ranks")
    if sorted(labels) != list(range(q)):
        raise InfsimError(f"rdh: the chips' hypercube labels {list(labels)} are not 0..{q - 1}")
    at = {lab: i for i, lab in enumerate(labels)}
    bits = q.bit_length() - 1
    p = c * q

    def exchange(bit: int, size: float, step: int, reduce: bool) -> list[Transfer]:
        return [Transfer(step, g[j], chips[at[labels[i] ^ (1 << bit)]][j], size, reduce)
                for j in range(c) for i, g in enumerate(chips)]

    tr: list[Transfer] = []
    s = 0
    if op in ("all_reduce", "reduce_scatter"):
        if c > 1:
            tr += _intra(chips, S / c, s, True)
            s += 1
        size = S / c
        for b in range(bits):  # recursive halving: half of what is left goes to the partner
            size /= 2
            tr += exchange(b, size, s, True)
            s += 1
    if op in ("all_reduce", "all_gather"):
        size = S / p
        for b in reversed(range(bits)):  # recursive doubling
            tr += exchange(b, size, s, False)
            size *= 2
            s += 1
        if c > 1:
            tr += _intra(chips, S / c, s, False)
    return tr


def kangaring(op: str, chips: Chips, S: float) -> list[Transfer]:
    c = _equal(chips)
    if c is None or c % 2:
        raise InfsimError(f"kangaring needs an even number of ranks on every chip (pairs), got "
                          f"{sorted({len(g) for g in chips})}")
    prim = [g[m] for g in chips for m in range(0, c, 2)]
    sec = {g[m]: g[m + 1] for g in chips for m in range(0, c, 2)}
    n = len(prim)
    chunk = S / n  # a pair's share

    def ring_step(step: int, reduce: bool) -> list[Transfer]:
        return [Transfer(step, P, prim[(i + 1) % n], chunk, reduce) for i, P in enumerate(prim)] if n > 1 else []

    def dup(step: int, size: float) -> list[Transfer]:
        return [Transfer(step, P, sec[P], size, dup=True) for P in prim]

    tr: list[Transfer] = []
    if op in ("all_reduce", "reduce_scatter"):
        for s in range(n - 1):
            tr += ring_step(s, True)
        if op == "reduce_scatter":
            return tr + [Transfer(n - 1, P, sec[P], chunk / 2) for P in prim]  # the secondary's half
        s0 = n - 1
    else:
        s0 = 0
    for s in range(s0, s0 + n - 1):  # all-gather: each write also lands in the writer's secondary
        tr += ring_step(s, False) + dup(s, chunk)
    tr += [Transfer(s0 + n - 1, P, sec[P], chunk) for P in prim]  # the last chunk received
    return tr


#: algorithm name -> builder ``(op, chips, S, labels) -> transfers``
BUILDERS: dict[str, Callable[[str, Chips, float, Sequence[int]], list[Transfer]]] = {
    "ring": lambda op, ch, S, lab: ring(op, ch, S),
    "bidir": lambda op, ch, S, lab: bidir(op, ch, S),
    "tree": lambda op, ch, S, lab: tree(op, ch, S),
    "hier": lambda op, ch, S, lab: hier(op, ch, S),
    "mesh": lambda op, ch, S, lab: mesh(op, ch, S),
    "rdh": rdh,
    "kangaring": lambda op, ch, S, lab: kangaring(op, ch, S),
}


def lnc_wrap(op: str, pairs: Sequence[Sequence[int]], S: float, inner: list[list[Transfer]],
             inner_steps: int) -> list[Transfer]:
    """A collective over logical cores of ``len(pairs[0])`` physical cores each (``pairs[l]`` = the rank
    indices of logical core ``l``): the physical cores exchange their parts through the logical core's shared
    HBM (``shared`` transfers), and half ``h`` (the ``h``-th physical core of every logical core) runs the
    logical-level algorithm on ``S / lnc`` (``inner[h]``, steps from 0, shifted here). all_reduce = shared
    reduce-scatter, the halves' all-reduces, shared all-gather; reduce_scatter = the first two; all_gather =
    the halves' all-gathers then the shared exchange."""
    lnc = len(pairs[0])
    part = S / lnc
    tr: list[Transfer] = []

    def shared(step: int, reduce: bool) -> list[Transfer]:
        return [Transfer(step, a, b, part, reduce, 0, True) for pr in pairs for a in pr for b in pr if a != b]

    s = 0
    if op in ("all_reduce", "reduce_scatter"):
        tr += shared(0, True)
        s = 1
    for half in inner:
        tr += [Transfer(t.step + s, t.src, t.dst, t.nbytes, t.reduce, t.channel, t.shared, t.dup) for t in half]
    s += inner_steps
    if op in ("all_reduce", "all_gather"):
        tr += shared(s, False)
    return tr
