"""Per-core lowering state: the buffers of the SBUF roles, the PSUM bank ring, the vector slots, the
weight stream, and the emission shortcuts the block emitters use.

A :class:`Rank` is one tensor-parallel rank (one core). Its buffers are created on first use at the
offsets the plan gave their roles (:class:`~.plan.LoweringPlan`) and linked with every other buffer
sharing bytes with them, so the emitter orders accesses to memory that roles reuse (:mod:`.emit`). The
HBM tensors of all ranks are tracked by one :class:`HbmBufs`.

Left out: the instructions of the blocks themselves (:mod:`.norm`, :mod:`.attention`, :mod:`.mlp`,
:mod:`.head`, :mod:`.linear`) and their order (:mod:`.transformer`).
"""

from __future__ import annotations

from typing import Any

from infsim.isa import ActFunc, DType, Engine, Op, Program, Space

from .emit import Buf, Emitter, Tile, link_aliases
from .plan import LoweringPlan
from .weight_stream import WeightStream

#: per-channel vector slots (biases, int8 scales) in a ring (a lowering choice, see the ``vec`` roles)
VEC_SLOTS = 4


class HbmBufs:
    """The tracked :class:`Buf` of every HBM tensor (and of separately tracked regions of one)."""

    def __init__(self, program: Program):
        self.program = program
        self.bufs: dict[str, Buf] = {}

    def __call__(self, name: str) -> Buf:
        return self.region(name, "")

    def region(self, name: str, tag: str) -> Buf:
        """A separately tracked region of an HBM tensor (``tag`` names it; ``""`` the whole tensor).
        Used by decode, where the cache positions written this step and the positions read are
        disjoint: reads of old positions need not wait for the write of the new one."""
        key = f"{name}@{tag}" if tag else name
        b = self.bufs.get(key)
        if b is None:
            b = Buf(key, Space.hbm, 0, 0, 0, 0, self.program.tensors[name].num_bytes, tensor=name)
            self.bufs[key] = b
        return b


class Rank:
    """Lowering state of one tensor-parallel rank (one core)."""

    # per-rank constants, set up once (see transformer._Lowering.setup_constants)
    ones_col: Tile  # [P, 1] ones (partition sums)
    ones_row: Tile  # [1, P] ones (broadcasts over partitions)
    rot: Tile  # [P, P] rotary signed permutation

    def __init__(self, pl: LoweringPlan, em: Emitter, hbm: HbmBufs, rank: int):
        self.pl, self.em, self.hbm = pl, em, hbm
        self.r = rank
        self.core = rank
        self.P = pl.P
        self.bufs: dict[str, list[Buf]] = {}
        self.single: dict[str, Buf] = {}
        self.registry: list[Buf] = []  # every on-chip buffer, for alias links
        #: the stationary tiles of a weight slab per slot and layout (:func:`.linear.linear`, made once)
        self.stat_grids: dict[tuple, tuple[tuple[Tile, ...], ...]] = {}
        self.psum_ring = [
            Buf(f"psum{i}", Space.psum, rank, 0, pl.P, i * pl.bank_bytes, pl.bank_bytes) for i in range(pl.banks)
        ]
        wslots = [self.buf_single(f"wslot{i}") for i in range(pl.wring)]
        dq = [self.buf_single(f"dq{i}") for i in range(2)] if pl.int8 else []
        self.ws = WeightStream(pl, em, rank, wslots, dq, hbm)
        self.start_layer()
        self._q_other = 0  # before the first layer: from the first "other" queue

    def start_layer(self) -> None:
        """Every layer starts from the same ring positions (so that layers repeat exactly); where "other"
        DMAs share the weight queues they start half-way round so they do not pile up on the queue that
        carries the layer's first slab."""
        self._bank = self.ws.dq_next = self.kv_slot = self._vec = 0
        self._vec_cache: dict[tuple[str, int], Buf] = {}
        self._q_other = 0 if self.pl.other_q0 else self.pl.other_queues // 2

    # ---- buffers --------------------------------------------------------------------------------
    def buf_single(self, role: str) -> Buf:
        """The one Buf of ``role`` (cached: its dependency history must persist across uses)."""
        b = self.single.get(role)
        if b is None:
            off, nbytes = self.pl.role_off[role], self.pl.role_bytes[role]
            b = Buf(f"{role}.c{self.core}", Space.sbuf, self.core, 0, self.P, off, nbytes)
            link_aliases(self.registry, b)
            self.single[role] = b
        return b

    def tiles(self, role: str, n: int, tile_bytes: int) -> list[Buf]:
        """At least ``n`` Bufs of ``tile_bytes`` bytes per partition, consecutive in ``role``."""
        have = self.bufs.setdefault(role, [])
        if have and have[0].nbytes != tile_bytes:
            raise AssertionError(f"role {role}: tiles of {tile_bytes} bytes requested, {have[0].nbytes} exist")
        base = self.pl.role_off[role]
        for t in range(len(have), n):
            b = Buf(f"{role}{t}.c{self.core}", Space.sbuf, self.core, 0, self.P, base + t * tile_bytes, tile_bytes)
            link_aliases(self.registry, b)
            have.append(b)
        return have

    def bank(self, keep: tuple[Buf, ...] = ()) -> Buf:
        """The next PSUM bank of the ring, skipping the banks in ``keep`` (ones still accumulating, which a
        long loop of transposes would otherwise wrap around the ring onto)."""
        if len(keep) >= len(self.psum_ring):
            raise AssertionError(f"all {len(self.psum_ring)} PSUM banks kept")
        while True:
            b = self.psum_ring[self._bank]
            self._bank = (self._bank + 1) % len(self.psum_ring)
            if not any(b is k for k in keep):
                return b

    def load_vec(self, tensor: str, which: int = 0) -> Buf:
        """DMA a whole per-channel vector (``[nvec, P, nt]`` fp32 tensor, entry ``which``) into the next
        vector slot, once per op; evictions then read ``slot.tile(fp32, 1, pcount, byte=j*4)``."""
        key = (tensor, which)
        hit = self._vec_cache.get(key)
        if hit is not None:
            return hit
        slot = self.buf_single(f"vec{self._vec % VEC_SLOTS}")
        self._vec += 1
        self._vec_cache = {k: v for k, v in self._vec_cache.items() if v is not slot}
        nt = self.hbm.program.tensors[tensor].shape[-1]
        src = self.hbm(tensor).hbm(DType.fp32, self.P, nt, ((1, nt),), byte=which * self.P * nt * 4)
        self.dma(slot.tile(DType.fp32, nt), src)
        self._vec_cache[key] = slot
        return slot

    # ---- emission shortcuts -------------------------------------------------------------------
    def dma(self, dst: Tile, src: Tile, queue: int | None = None, partial: bool = False) -> None:
        """A DMA on ``queue``, by default the next of the "other" (non-weight) queues."""
        if queue is None:
            queue = self.pl.other_q0 + self._q_other % self.pl.other_queues
            self._q_other += 1
        self.em.emit(Op.dma_copy, self.core, Engine.dma, queue, dst=dst, src=src, partial=partial)

    def columns_dma(
        self,
        tiles: list[Buf],
        tensor: str,
        nfeat: int,
        dtype: DType,
        col0: int,
        ncol: int,
        *,
        store: bool = False,
        partial: bool = False,
    ) -> None:
        """Columns ``col0..col0+ncol`` of the feature-major HBM tensor ``tensor`` (``[features, tokens]``,
        ``nfeat`` features) into ``tiles`` (one DMA per feature tile), or from them with ``store``."""
        tokens = self.hbm.program.tensors[tensor].shape[1]
        src = self.hbm(tensor)
        for t in range(-(-nfeat // self.P)):
            rows = min(self.P, nfeat - t * self.P)
            h = src.hbm(dtype, rows, tokens, ((1, ncol),), byte=(t * self.P * tokens + col0) * dtype.itemsize)
            s = tiles[t].tile(dtype, ncol, pcount=rows)
            if store:
                self.dma(h, s, partial=partial)
            else:
                self.dma(s, h, partial=partial)

    def vec(self, opcode: Op, /, **kw: Any) -> None:
        """An instruction on the vector engine (or ``engine=``)."""
        engine = kw.pop("engine", Engine.vector)
        self.em.emit(opcode, self.core, engine, **kw)

    def act(self, func: ActFunc, dst: Tile, src: Tile, **kw: Any) -> None:
        self.em.emit(Op.activate, self.core, Engine.scalar, dst=dst, src=src, func=func, **kw)

    def mm(self, dst: Tile, stat: Tile, mov: Tile, acc: bool, extra_waits: dict[str, int] | None = None) -> None:
        self.em.emit(Op.matmul, self.core, Engine.tensor, dst=dst, stationary=stat, moving=mov, accumulate=acc,
                     extra_waits=extra_waits)

    def transpose_into(self, dst: Tile, src: Tile, keep: tuple[Buf, ...] = ()) -> None:
        """``dst[F, P] = src[P, F]^T``: a TensorE transpose into the next PSUM bank (not one of ``keep``), then a
        vector copy out."""
        pt = self.bank(keep).tile(DType.fp32, dst.ap.free_size, pcount=dst.ap.partitions)
        self.em.emit(Op.transpose, self.core, Engine.tensor, dst=pt, src=src)
        self.vec(Op.tensor_copy, dst=dst, src=pt)
