"""The weight stream of one core: weight slabs from HBM through a ring of SBUF slots, loaded ahead.

The lowering consumes weights slab by slab (:mod:`.weights` for the slab layout) in an order known
before emission (:meth:`WeightStream.plan`); :meth:`WeightStream.next_slab` hands out the slot holding
the next slab and :meth:`WeightStream.slab_done` frees it. A slab's DMA is emitted as soon as a slot is
free for it, so the DMAs run up to a ring's depth ahead of the tensor engine, across op and layer
boundaries (prefetch / double buffering): the emitter's dependency tracking makes a slot's refill wait
for the matmuls reading its previous slab. Slabs go round-robin over the weight DMA queues
(:func:`.plan.dma_queue_split`). With int8 weights each slab is dequantised to bf16 on the vector
engine into one of two staging buffers before the matmuls read it.

The DMAs are tagged ``weight_stream`` with the layer of the weights they load, the dequantising copies
``dequant`` (:mod:`.tags`). Left out: weight compression other than int8, slabs shared between ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from infsim.isa import DType, Engine, Op

from .emit import Buf, Emitter, Tile
from .plan import LoweringPlan, rank_tensor
from .tags import OpClass, layer_of


class _Entry(NamedTuple):
    name: str  # weight
    slab: int  # slab index within the weight's plan
    slot: int  # ring slot
    queue: int  # DMA queue
    vpos: int  # virtual position (see WeightStream.plan)
    layer: int  # layer of the weight (tag of its DMA)


class WeightStream:
    """Slab ring of one core: ``slots`` (the ring), ``dq`` (int8 staging buffers, else empty),
    ``hbm(name)`` the tracked buffer of an HBM tensor."""

    def __init__(
        self,
        pl: LoweringPlan,
        em: Emitter,
        rank: int,
        slots: list[Buf],
        dq: list[Buf],
        hbm: Callable[[str], Buf],
    ):
        self.pl, self.em, self.rank, self.core = pl, em, rank, rank
        self.slots, self.dq, self.hbm = slots, dq, hbm
        self._seq: list[_Entry] = []  # slabs in consumption order
        self._pos = 0  # next slab to be consumed
        self._emitted = 0  # slabs whose DMA has been emitted
        self.dq_next = 0  # next staging buffer (reset per layer, so that layers repeat exactly)

    def plan(self, groups: list[list[str]]) -> None:
        """The order in which weight slabs are consumed, as groups (one per layer, one for the head).

        Every group starts at a *virtual* position aligned to the ring depth D, and a slab's slot is its
        virtual position mod D; a slab is loaded only when its virtual position is within D of the next
        slab to be consumed, so a slot is never refilled before its previous slab was used, and every
        layer uses the slots (and DMA queues) in the same pattern (periodic layers, see :mod:`.repeat`)."""
        d = len(self.slots)
        v = 0
        for names in groups:
            v = -(-v // d) * d
            pos = 0
            for n in names:
                for s in self.pl.plans[n].slabs:
                    self._seq.append(_Entry(n, s.index, v % d, pos % self.pl.weight_queues, v, layer_of(n)))
                    v += 1
                    pos += 1

    def _fill_window(self) -> None:
        if self._pos >= len(self._seq):
            return
        limit = self._seq[self._pos].vpos + len(self.slots)
        while self._emitted < len(self._seq) and self._seq[self._emitted].vpos < limit:
            self._emit_load(self._seq[self._emitted])
            self._emitted += 1

    def _emit_load(self, e: _Entry) -> None:
        sl = self.pl.plans[e.name].slabs[e.slab]
        wdt = self.pl.wdt
        src = self.hbm(rank_tensor(e.name, self.rank)).hbm(
            wdt, sl.rows, sl.nk * sl.csz, ((1, sl.nk * sl.csz),), byte=sl.offset_elems * wdt.itemsize
        )
        dst = self.slots[e.slot].tile(wdt, sl.nk * sl.csz, pcount=sl.rows)
        with self.em.tagged(OpClass.weight_stream, e.layer):
            self.em.emit(Op.dma_copy, self.core, Engine.dma, e.queue, dst=dst, src=src)

    def next_slab(self, name: str) -> Tile:
        """The SBUF tile holding the next slab of weight ``name`` (loads ahead as slots free up)."""
        i = self._pos
        if i >= len(self._seq) or self._seq[i].name != name:
            raise AssertionError(f"weight stream out of order at {i}: expected {name}")
        self._fill_window()
        e = self._seq[i]
        sl = self.pl.plans[name].slabs[e.slab]
        t = self.slots[e.slot].tile(self.pl.wdt, sl.nk * sl.csz, pcount=sl.rows)
        if self.pl.int8:  # dequantise int8 -> bf16 on the vector engine
            dq = self.dq[self.dq_next % len(self.dq)]
            self.dq_next += 1
            out = dq.tile(DType.bf16, sl.nk * sl.csz, pcount=sl.rows)
            with self.em.tagged(OpClass.dequant):
                self.em.emit(Op.tensor_copy, self.core, Engine.vector, dst=out, src=t)
            t = out
        return t

    def slab_done(self) -> None:
        """The slab handed out last has been consumed: its slot may be refilled."""
        self._pos += 1
        self._fill_window()

    def skip(self, slabs: int) -> None:
        """Advance past ``slabs`` slabs whose loads and uses were emitted by replication (:mod:`.repeat`)."""
        self._pos += slabs
        self._emitted += slabs
