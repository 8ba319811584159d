"""Synthetic programs for the engine benchmark and tests: a realistic instruction mix of any size, and
HBM transfer mixes.

:func:`synthetic_program` builds a tiled-GEMM-like pipeline per core, double-buffered:

per core and tile ``t`` (slot ``t % 2``): two HBM->SBUF loads (activations 128x512 and weights 128x128
bf16; queues rotate over 8 DMA queues), ``k_tiles`` accumulating matmuls (the first waits for the loads
and for the eviction of the PSUM bank two tiles back, the last signals), a ScalarE PSUM eviction
(activation), two VectorE ops, and a SBUF->HBM store every fourth tile (a GpSimd copy otherwise).
Loads of a slot wait until the matmuls of its previous use are done. Records are generated in bulk
with numpy (no per-instruction Python), so building a million instructions takes well under a second.

:func:`transfer_mix` is DMA transfers only, of one HBM access pattern per program, ``reps`` per queue on
``queues`` queues of each of ``cores`` cores, no waits (the memory model's test cases against the
command-level replay, :mod:`infsim.engine.memory.replay`): ``stream`` 256 KiB contiguous reads; ``tile``
128 rows of 1 KiB, 16 KiB apart (a weight tile of a wide matrix); ``gather`` 64 rows of 128 B, 1 KiB apart;
``scatter`` the K-cache column write (2 B rows 4352 B apart); ``copy`` 256 KiB reads and writes on
alternate queues; ``mix`` one queue in four writes.
"""

from __future__ import annotations

import numpy as np

from infsim.isa import DType, Program, hbm, make, psum, sbuf
from infsim.isa.opcodes import Engine, Op
from infsim.isa.program import INSTR_DTYPE, INTS_UNUSED


def synthetic_program(n_target: int, cores: int = 2, k_tiles: int = 4, seed: int = 0) -> Program:
    """About ``n_target`` instructions of the mix in the module docstring, over ``cores`` cores."""
    rng = np.random.default_rng(seed)
    p = Program(num_cores=cores, cores_per_chip=max(cores, 2))
    p.add_tensor("x", "bf16", (4096, 4096))
    p.add_tensor("y", "bf16", (4096, 4096))
    per_tile = 2 + k_tiles + 1 + 2 + 1
    tiles = max(1, n_target // (cores * per_tile))
    a_ld = p.ap_id(hbm("x", 128, 512, DType.bf16, row_stride=4096))
    w_ld = p.ap_id(hbm("x", 128, 128, DType.bf16, row_stride=4096, offset=1 << 20))
    st_hbm = p.ap_id(hbm("y", 128, 512, DType.bf16, row_stride=4096))
    bufs_a = [p.ap_id(sbuf(128, 512, DType.bf16, offset=o)) for o in (0, 1024)]
    bufs_w = [p.ap_id(sbuf(128, 128, DType.bf16, offset=o)) for o in (2048, 2304)]
    ps = [p.ap_id(psum(128, 512, offset=o)) for o in (0, 2048)]
    ev = p.ap_id(sbuf(128, 512, DType.bf16, offset=4096))
    tmp = p.ap_id(sbuf(128, 512, DType.fp32, offset=8192))
    sem = {}
    for c in range(cores):
        for slot in range(2):
            for name in ("ld", "mm", "ev", "vec"):
                sem[(c, slot, name)] = p.semaphore(f"{name}{c}_{slot}")

    # template per (slot, core): records plus wait-value coefficients  wval = a * use + b  (a < 0: drop if use == 1)
    def template(slot: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r = np.zeros(per_tile, INSTR_DTYPE)
        r["opnd"], r["wsem"], r["ssem"], r["ints"], r["core"] = -1, -1, -1, INTS_UNUSED, c
        a = np.zeros((per_tile, 2), np.int64)
        b = np.zeros((per_tile, 2), np.int64)
        only_reuse = np.zeros((per_tile, 2), bool)

        def S(n: str) -> int:
            return sem[(c, slot, n)]

        for j, (dst, src) in enumerate(((bufs_a[slot], a_ld), (bufs_w[slot], w_ld))):
            r[j]["op"], r[j]["engine"] = int(Op.dma_copy), int(Engine.dma)
            r[j]["opnd"][:2] = (dst, src)
            r[j]["ssem"][0], r[j]["sval"][0] = S("ld"), 1
            r[j]["wsem"][0] = S("mm")
            a[j, 0], b[j, 0], only_reuse[j, 0] = 1, -1, True
        for j in range(k_tiles):
            x = r[2 + j]
            x["op"], x["engine"] = int(Op.matmul), int(Engine.tensor)
            x["opnd"][:3] = (ps[slot], bufs_w[slot], bufs_a[slot])
            x["flags"] = int(j > 0)
            if j == 0:
                x["wsem"][0] = S("ld")
                a[2, 0] = 2
                x["wsem"][1] = S("ev")
                a[2, 1], b[2, 1], only_reuse[2, 1] = 1, -1, True
            if j == k_tiles - 1:
                x["ssem"][0], x["sval"][0] = S("mm"), 1
        x = r[2 + k_tiles]
        x["op"], x["engine"], x["f0"] = int(Op.activate), int(Engine.scalar), 1.0
        x["opnd"][:2] = (ev, ps[slot])
        x["wsem"][0] = S("mm")
        a[2 + k_tiles, 0] = 1
        x["ssem"][0], x["sval"][0] = S("ev"), 1
        x = r[3 + k_tiles]
        x["op"], x["engine"] = int(Op.tensor_tensor), int(Engine.vector)
        x["opnd"][:3] = (tmp, ev, tmp)
        x["wsem"][0] = S("ev")
        a[3 + k_tiles, 0] = 1
        x = r[4 + k_tiles]
        x["op"], x["engine"], x["e1"] = int(Op.tensor_scalar), int(Engine.vector), 12  # op1 = bypass
        x["opnd"][:2] = (ev, tmp)
        x["ssem"][0], x["sval"][0] = S("vec"), 1
        x = r[per_tile - 1]  # store variant (GpSimd copy variant patched per tile below)
        x["op"], x["engine"] = int(Op.dma_copy), int(Engine.dma)
        x["opnd"][:2] = (st_hbm, ev)
        x["wsem"][0] = S("vec")
        a[per_tile - 1, 0] = 1
        return r, a, b, only_reuse

    out = np.zeros((tiles, cores, per_tile), INSTR_DTYPE)
    t = np.arange(tiles)
    use = t // 2 + 1
    for slot in range(2):
        sel = t[t % 2 == slot]
        for c in range(cores):
            r, a, b, only = template(slot, c)
            blk = np.broadcast_to(r, (len(sel), per_tile)).copy()
            u = use[sel][:, None, None]
            wv = a[None] * u + b[None]
            ws = np.where(only[None] & (u == 1), -1, blk["wsem"])
            blk["wval"] = np.where(ws >= 0, wv, 0)
            blk["wsem"] = ws
            blk["queue"][:, 0] = (2 * sel) % 8
            blk["queue"][:, 1] = (2 * sel) % 8 + 1
            blk["queue"][:, per_tile - 1] = 8 + (sel // 4) % 4
            blk["e0"][:, 2 + k_tiles] = rng.integers(0, 3, len(sel))
            copy = sel % 4 != 3
            last = blk[copy, per_tile - 1]
            last["op"], last["engine"], last["queue"] = int(Op.tensor_copy), int(Engine.gpsimd), 0
            last["opnd"][:, :2] = (tmp, tmp)
            last["wsem"], last["wval"] = -1, 0
            blk[copy, per_tile - 1] = last
            out[sel, c] = blk
    p.append_records(out.reshape(-1))
    return p


TRANSFER_MIXES = ("stream", "tile", "gather", "scatter", "copy", "mix")


def transfer_mix(kind: str, queues: int = 4, reps: int = 8, cores: int = 1) -> Program:
    """DMA transfers of one access pattern (module docstring)."""
    if kind not in TRANSFER_MIXES:
        raise ValueError(f"unknown transfer mix '{kind}' (one of {', '.join(TRANSFER_MIXES)})")
    p = Program(num_cores=cores, cores_per_chip=max(cores, 2))
    p.add_tensor("w", "bf16", (4096, 8192))
    p.add_tensor("o", "bf16", (4096, 8192))
    for c in range(cores):
        for q in range(queues):
            for r in range(reps):
                k = (c * queues + q) * reps + r
                if kind == "stream":
                    src = hbm("w", 128, 1024, DType.bf16, offset=k << 18)
                    p.append(make("dma_copy", sbuf(128, 1024, DType.bf16), src, queue=q, core=c))
                elif kind == "tile":
                    src = hbm("w", 128, 512, DType.bf16, row_stride=8192,
                              offset=(k % 16) * 1024 + (k // 16) * (128 << 14))
                    p.append(make("dma_copy", sbuf(128, 512, DType.bf16), src, queue=q, core=c))
                elif kind == "gather":
                    src = hbm("w", 64, 64, DType.bf16, row_stride=512, offset=k << 16)
                    p.append(make("dma_copy", sbuf(64, 64, DType.bf16), src, queue=q, core=c))
                elif kind == "scatter":
                    dst = hbm("o", 128, 1, DType.bf16, row_stride=2176, offset=2 * k)
                    p.append(make("dma_copy", dst, sbuf(128, 1, DType.bf16), queue=q, core=c))
                else:
                    write = q % 2 == 1 if kind == "copy" else q % 4 == 3
                    h = hbm("o" if write else "w", 128, 1024, DType.bf16, offset=k << 18)
                    s = sbuf(128, 1024, DType.bf16)
                    p.append(make("dma_copy", h, s, queue=q, core=c) if write
                             else make("dma_copy", s, h, queue=q, core=c))
    return p
