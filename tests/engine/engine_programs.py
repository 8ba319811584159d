"""Program builders for the engine tests: random deadlock-free multi-stream programs (hypothesis), and
the realistic synthetic mix of :mod:`infsim.engine.synthetic` re-exported."""

from __future__ import annotations

from hypothesis import strategies as st

from infsim.engine.synthetic import synthetic_program
from infsim.isa import DType, Program, hbm, make, psum, sbuf

__all__ = ["random_programs", "synthetic_program"]

COMPUTE = ("tensor", "vector", "scalar", "gpsimd", "sync")


@st.composite
def random_programs(draw: st.DrawFn, max_instructions: int = 40, cores: tuple[int, ...] = (1, 2),
                    collectives: bool = True) -> Program:
    """A random program whose every wait is met by signals of instructions earlier in a global order
    (so it cannot deadlock), over compute engines, DMA queues, barriers and collectives."""
    ncores = draw(st.sampled_from(cores))
    p = Program(num_cores=ncores, cores_per_chip=2)
    p.add_tensor("t0", "bf16", (256, 2048))
    p.add_tensor("t1", "fp32", (256, 1024))
    if ncores > 1:
        p.add_group("all", tuple(range(ncores)))
    nsem = draw(st.integers(1, 4))
    sems = [f"s{i}" for i in range(nsem)]
    for s in sems:
        p.add_semaphore(s)
    p.add_semaphore("bar")
    count = {s: 0 for s in sems}
    n = draw(st.integers(1, max_instructions))
    # a few shapes only, so that equal durations (ties) are common
    free = st.sampled_from([1, 64, 128, 512])
    parts = st.sampled_from([1, 32, 128])
    for _ in range(n):
        core = draw(st.integers(0, ncores - 1))
        kind = draw(st.sampled_from(["tensor", "vector", "scalar", "gpsimd", "sync", "dma", "dma", "barrier",
                                     "cc", "p2p"]))
        waits = []
        for _w in range(draw(st.integers(0, 2))):
            s = draw(st.sampled_from(sems))
            if count[s] > 0:
                waits.append((s, draw(st.integers(1, count[s]))))
        if len({w[0] for w in waits}) < len(waits):
            waits = waits[:1]
        signals = []
        for _s in range(draw(st.integers(0, 2))):
            s = draw(st.sampled_from(sems))
            if s not in {x[0] for x in signals}:
                signals.append((s, draw(st.integers(1, 2))))
        kw = {"core": core, "waits": waits, "signals": signals}
        if kind == "tensor":
            k, m, nn = draw(parts), draw(st.sampled_from([1, 64, 128])), draw(free)
            stat_off = draw(st.sampled_from([0, 4096]))
            dt = draw(st.sampled_from([DType.bf16, DType.fp32, DType.int8]))
            if draw(st.booleans()):
                ins = make("matmul", psum(m, nn), sbuf(k, m, dt, offset=stat_off), sbuf(k, nn, dt, offset=8192), **kw)
            else:
                ins = make("transpose", psum(m, k), sbuf(k, m, dt, offset=stat_off), **kw)
        elif kind in ("vector", "gpsimd"):
            pp, f = draw(parts), draw(free)
            op = draw(st.sampled_from(["tensor_tensor", "tensor_copy", "memset", "tensor_scalar"]))
            dst, a, b = sbuf(pp, f, DType.bf16), sbuf(pp, f, DType.bf16, offset=1 << 14), sbuf(pp, f, DType.fp32)
            if op == "tensor_tensor":
                ins = make(op, dst, a, b, op="add", engine=kind, **kw)
            elif op == "tensor_copy":
                ins = make(op, dst, a, engine=kind, **kw)
            elif op == "memset":
                ins = make(op, dst, engine=kind, value=1.0, **kw)
            else:
                ins = make(op, dst, a, op0="mul", imm0=2.0, engine=kind, **kw)
        elif kind == "scalar":
            pp, f = draw(parts), draw(free)
            ins = make("activate", sbuf(pp, f, DType.bf16), psum(pp, f), func=draw(st.sampled_from(["exp", "relu"])),
                       **kw)
        elif kind == "sync":
            ins = make(draw(st.sampled_from(["sem_signal", "sem_wait", "nop"])), **kw)
        elif kind == "dma":
            q = draw(st.integers(0, 3)) * draw(st.sampled_from([1, 16]))  # queues 16+ share engines 0..3
            rows, cols = draw(parts), draw(free)
            src = hbm("t0", rows, cols, DType.bf16, row_stride=2048, offset=draw(st.sampled_from([0, 4096])))
            how = draw(st.sampled_from(["load", "store", "load", "store", "nop"]))
            if how == "load":
                ins = make("dma_copy", sbuf(rows, cols, DType.bf16), src, queue=q, **kw)
            elif how == "store":
                ins = make("dma_copy", src, sbuf(rows, cols, DType.bf16), queue=q, **kw)
            else:
                ins = make("nop", engine="dma", queue=q, **kw)
        elif kind == "barrier":
            # the sync stream of every core meets at the barrier (all at the same global position)
            for c in range(ncores):
                extra = {"waits": waits, "signals": signals} if c == core else {}
                p.append(make("barrier", core=c, sem="bar", count=ncores, **extra))
            for s, v in signals:
                count[s] += v
            continue
        elif kind == "p2p":  # a send and its matching recv at the same global position
            if ncores < 2:
                ins = make("nop", engine="cc", **kw)
            else:
                a = draw(st.integers(0, ncores - 1))
                b = (a + 1) % ncores
                f = draw(free)
                p.append(make("send", sbuf(128, f, DType.fp32), peer=b, tag=3, core=a, queue=1, waits=waits,
                              signals=signals))
                p.append(make("recv", sbuf(128, f, DType.fp32), peer=a, tag=3, core=b, queue=1))
                for s, v in signals:
                    count[s] += v
                continue
        else:  # collective over all cores (all members in the same global position)
            if not collectives or ncores < 2:
                ins = make("nop", engine="cc", **kw)
            else:
                f = draw(free)
                for c in range(ncores):
                    p.append(make("all_reduce", sbuf(128, f, DType.fp32), sbuf(128, f, DType.fp32, offset=1 << 15),
                                  group="all", core=c, **({"waits": waits, "signals": signals} if c == core else {})))
                for s, v in signals:
                    count[s] += v
                continue
        p.append(ins)
        for s, v in signals:
            count[s] += v
    return p
