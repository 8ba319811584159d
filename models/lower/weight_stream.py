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

from infsim.isa import DType, Engine, Op

from .emit import Buf, Emitter, Tile
from .plan import LoweringPlan, rank_tensor
from .tags import OpClass, layer_of


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
        # the slabs in consumption order, one list per field: weight, slab index within the weight's plan,
        # virtual position (see plan), position within its group (its DMA queue: mod the weight queues), layer
        self._name: list[str] = []
        self._slab: list[int] = []
        self._vpos: list[int] = []
        self._gpos: list[int] = []
        self._layer: list[int] = []
        self._pos = 0  # next slab to be consumed
        self._emitted = 0  # slabs whose DMA has been emitted
        self.dq_next = 0  # next staging buffer (reset per layer, so that layers repeat exactly)
        self._src: dict[str, Buf] = {}  # weight -> the tracked buffer of this rank's HBM tensor

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
                k = len(self.pl.plans[n].slabs)  # (a slab's index is its place in the plan)
                self._name.extend([n] * k)
                self._slab.extend(range(k))
                self._vpos.extend(range(v, v + k))
                self._gpos.extend(range(pos, pos + k))
                self._layer.extend([layer_of(n)] * k)
                v += k
                pos += k

    def _fill_window(self) -> None:
        vpos, n = self._vpos, len(self._vpos)
        if self._pos >= n:
            return
        limit = vpos[self._pos] + len(self.slots)
        while self._emitted < n and vpos[self._emitted] < limit:
            self._emit_load(self._emitted)
            self._emitted += 1

    def _emit_load(self, i: int) -> None:
        """The DMA of slab ``i`` (of the consumption order) into its slot."""
        name = self._name[i]
        sl = self.pl.plans[name].slabs[self._slab[i]]
        wdt = self.pl.wdt
        hb = self._src.get(name)
        if hb is None:
            hb = self._src[name] = self.hbm(rank_tensor(name, self.rank))
        free = sl.nk * sl.csz
        src = hb.hbm(wdt, sl.rows, free, ((1, free),), byte=sl.offset_elems * wdt.itemsize)
        dst = self.slots[self._vpos[i] % len(self.slots)].tile(wdt, free, pcount=sl.rows)
        with self.em.tagged(OpClass.weight_stream, self._layer[i]):
            self.em.emit(Op.dma_copy, self.core, Engine.dma, self._gpos[i] % self.pl.weight_queues, dst=dst, src=src)

    def next_slab(self, name: str) -> Tile:
        """The SBUF tile holding the next slab of weight ``name`` (loads ahead as slots free up)."""
        i = self._pos
        if i >= len(self._name) or self._name[i] != name:
            raise AssertionError(f"weight stream out of order at {i}: expected {name}")
        self._fill_window()
        sl = self.pl.plans[name].slabs[self._slab[i]]
        t = self.slots[self._vpos[i] % len(self.slots)].tile(self.pl.wdt, sl.nk * sl.csz, pcount=sl.rows)
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
