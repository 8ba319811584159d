"""The numba engine (``mode='numba'``, the default of ``simulate(fidelity='cycle')``): the simpy reference
engine's timing rules (:mod:`infsim.engine.core`, ``mode='plain'``), run by one compiled kernel
(:mod:`infsim.engine.kernel`) over every stream of every core of every chip of the program.

Why one kernel over all chips, with the collective durations asked up front
---------------------------------------------------------------------------
The design card's shape is "simpy orchestrates chips as processes, with collectives and link contention as
its events; a numba kernel advances all streams of a chip's cores between those events". Under the
engine's collective interface that orchestration would carry no information the kernel lacks:

* chips interact only through collectives (and through DMA transfers that touch another chip's HBM);
* a collective's members and sizes are fixed by the program (:func:`~infsim.engine.rendezvous.plan_collectives`),
  and :meth:`~infsim.engine.collectives.CollectiveTiming.duration_ps` is a function of exactly those (the
  interface carries no time and no other traffic: the link model is contention-free), so every duration
  can be asked before the run and gives the rendezvous the time it would get at its last arrival;
* the memory model's calls must come in global time order across chips (its contract), which one event
  heap over all chips gives for free, while per-chip kernels would have to run in lock-step windows
  bounded by the earliest possible collective end to keep it (conservative parallel simulation, with
  its own deadlock-avoidance rules), for the same result.

So one kernel with one clock is equivalent and simpler. Should a collective model ever need the time or
the traffic in flight (link contention), the kernel's state is all in arrays and it can stop at each
rendezvous to ask; the protocol would change first. simpy remains the right tool where it is used: the
reference engine, the standalone collective network simulation (:mod:`infsim.hw.collectives`), and any
memory model that is not the shared rate pool (such a model runs on the reference engine).

Why the times are the reference's (every instruction's start and end, per-stream busy and stall)
-----------------------------------------------------------------------------------------------------
*Compute and collective streams run ahead of the global clock.* Instruction ``i`` starts at
``max(free_i, crossing of each wait)``. The kernel keeps every semaphore's *known* signals (time,
increment), so the *known crossing* ``c`` of a wait is the time they reach its value. Counters only grow,
so signals not yet known can only make the true crossing *earlier* than ``c``, never later. Every signal not
yet known will come from a stream that has not reached the instruction giving it: it takes effect no
earlier than that stream's lower bound ``max(clock, global clock) + latmin`` (``latmin``: the smallest
start-to-signal latency among its remaining signalling instructions, a suffix minimum; 0 for nops,
barrier arrivals and collectives) and, since a stream's signals take effect in program order, no earlier
than its latest one. Hence:

* ``c <= free``: the instruction starts at ``free`` (exact);
* ``c`` at or before the global clock, or every other signaller's lower bound ``>= c``: no unknown signal
  can come before ``c``, so the instruction starts at ``c`` (exact);
* otherwise the stream waits on the semaphore; a new signal re-examines it, and a known crossing
  schedules a wake-up at ``c``. When the global clock reaches ``c``, every signal before it is known
  (the streams that could still give one are blocked at or after the clock, or ran ahead and gave theirs
  already; DMA decisions and collective completions happen at the clock), so the crossing is final.

*DMA engines are not run ahead.* The reference takes all DMA decisions of an instant in rounds after every
other event of the instant, engines in (core, engine) order, a zero-time completion's signals applied after
its round. The kernel's heap orders an instant's wake-ups before its rounds and a round's engines by index;
it holds zero-time signals until the end of the round; compute streams woken by a round's signals run
after it. A DMA head is ready exactly when the known signals up to the clock reach its waits: every signal
the reference has applied by then. The chunk arithmetic and the memory model's (integer and IEEE float
operations in the same order, the same step-function allocator) are the reference's, so the HBM side gives
the same integers.

*Collectives*: every member starts at the last member's arrival (an exact time, whenever the kernel
computes it) and ends after the duration.

``tests/engine/test_engine_numba.py`` holds every start and finish time, the totals, per-stream busy/stall, HBM and
link bytes and deadlock reports equal to the reference on random programs (hypothesis) and lowered ones.

Memory models: the kernel times HBM with :class:`~infsim.engine.memory.simple.SimpleMemory`'s pool (per chip
``bandwidth_gbps`` shared greedily, ``latency_ps``), each transfer at its instruction's access-pattern
efficiency (:meth:`~infsim.engine.memory.MemoryModel.access`) and reads and writes mixed at the model's
``kappa`` / ``write_batch``: that is all of ``simple`` and ``dram``. Models that replace ``transfer`` are not
expressible there and run on the reference engine (:func:`supports`; ``run_engine`` falls back).
"""

from __future__ import annotations

import numpy as np

from infsim.config.schema import ChipConfig
from infsim.errors import InfsimError
from infsim.isa.opcodes import Engine, Op
from infsim.isa.program import Program
from infsim.jit import NO_NRT, njit_cached

from . import kernel as K
from .collectives import CollectiveTiming, make_collectives
from .costs import IS_COLLECTIVE, Costs, narrow_int32
from .heap import release_free_heap
from .memory import MemoryModel
from .memory.simple import SimpleMemory
from .rendezvous import CollectivePlan, plan_collectives
from .semaphores import NEVER
from .streams import EngineRun, StreamStats, barrier_targets, deadlock_error


def _signal_latency(program: Program, chip: ChipConfig, costs: Costs, ssem: np.ndarray, bar_rows: np.ndarray
                    ) -> np.ndarray:
    """Per instruction, the time from its start to its signals if it gives any (DMA: fixed latency + engine
    time; barrier arrivals, nops and collectives: 0; others: their latency), ``NEVER`` if it gives none."""
    op = program.instr["op"]
    sig = ssem[:, 0] >= 0
    for j in range(1, ssem.shape[1]):
        sig |= ssem[:, j] >= 0
    own = np.where(sig, costs.lat_ps, NEVER)
    fixed = int(round(chip.dma.fixed_latency_ns * 1000))
    d_sig = sig[costs.dma_rows]
    own[costs.dma_rows[d_sig]] = costs.dma_engine_ps.values[d_sig] + fixed
    zero = sig & _ZERO_LATENCY_OP[op]  # (one lookup per record: np.isin compares the column once per opcode)
    zero[bar_rows] = True
    own[zero] = 0
    return own


#: per opcode: whether the lower bound on its signals is its start (nops and collectives; barriers by row)
_ZERO_LATENCY_OP = IS_COLLECTIVE.copy()
_ZERO_LATENCY_OP[int(Op.nop)] = True


@njit_cached(**NO_NRT)
def _stream_tables(order: np.ndarray, begin: np.ndarray, lens: np.ndarray, own: np.ndarray, ssem: np.ndarray,
                   xrow: np.ndarray, bar_s: np.ndarray, sigsuf: np.ndarray, stamp: np.ndarray, pair_s: np.ndarray,
                   pair_k: np.ndarray) -> int:
    """One pass over the streams (``order[begin[k]:begin[k] + lens[k]]``: stream ``k``'s instructions), into
    arrays the caller allocates (the kernel allocates nothing, so it loads without numba's runtime):

    * ``sigsuf[i]``: a lower bound on (the next signal of its stream - its start), over it and the rest of
      its stream: the suffix minimum of ``own`` (:func:`_signal_latency`). Signals applied in program
      order only come later, so it bounds them too (the kernel's lookahead);
    * the pairs (semaphore ``pair_s[x]``, stream ``pair_k[x]``) of a stream that can signal the semaphore
      (signals and barrier arrivals), in ascending stream order, as many as fit (``stamp``: one entry per
      semaphore, scratch).

    Returns the number of pairs; more than ``len(pair_s)`` means they did not all fit (call again with room
    for that many: :func:`_signallers`)."""
    stamp[:] = -1
    cap = pair_s.shape[0]
    npair = 0
    for k in range(begin.shape[0]):
        b = begin[k]
        lo = NEVER
        for x in range(b + lens[k] - 1, b - 1, -1):
            i = order[x]
            if own[i] < lo:
                lo = own[i]
            sigsuf[i] = lo
            for j in range(ssem.shape[1] + 1):
                s = ssem[i, j] if j < ssem.shape[1] else (bar_s[-2 - xrow[i]] if xrow[i] <= -2 else -1)
                if s >= 0 and stamp[s] != k:
                    stamp[s] = k
                    if npair < cap:
                        pair_s[npair] = s
                        pair_k[npair] = k
                    npair += 1
    return npair


def _signallers(order: np.ndarray, begin: np.ndarray, lens: np.ndarray, own: np.ndarray, ssem: np.ndarray,
                xrow: np.ndarray, bar_s: np.ndarray, nsem: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_stream_tables`: ``sigsuf`` and the streams that can signal each semaphore, ``lst[ptr[s]:ptr[s + 1]]``
    for semaphore ``s``, ascending."""
    sigsuf = np.empty(len(order), np.int64)
    stamp = np.empty(nsem, np.int64)
    cap = 4 * (nsem + len(begin)) + 64  # usually enough; else a second pass with the exact number
    pair_s, pair_k = np.empty(cap, np.int64), np.empty(cap, np.int64)
    npair = _stream_tables(order, begin, lens, own, ssem, xrow, bar_s, sigsuf, stamp, pair_s, pair_k)
    if npair > cap:
        pair_s, pair_k = np.empty(npair, np.int64), np.empty(npair, np.int64)
        _stream_tables(order, begin, lens, own, ssem, xrow, bar_s, sigsuf, stamp, pair_s, pair_k)
    pair_s, pair_k = pair_s[:npair], pair_k[:npair]
    ptr = np.zeros(nsem + 1, np.int64)
    np.cumsum(np.bincount(pair_s, minlength=nsem), out=ptr[1:])
    lst = pair_k[np.argsort(pair_s, kind="stable")]  # pairs come in ascending stream order
    return sigsuf, ptr, lst


@njit_cached(**NO_NRT)
def _sync_columns(wsem: np.ndarray, wval: np.ndarray, ssem: np.ndarray, sval: np.ndarray, ws: np.ndarray,
                  wv: np.ndarray, ss: np.ndarray, sv: np.ndarray) -> None:
    """Contiguous copies of the records' wait and signal columns into ``ws, wv, ss, sv``, in one pass over the
    records (numpy copies each strided column on its own, ~4x slower)."""
    n, m = wsem.shape
    for i in range(n):
        for j in range(m):
            ws[i, j] = wsem[i, j]
            wv[i, j] = wval[i, j]
        for j in range(ssem.shape[1]):
            ss[i, j] = ssem[i, j]
            sv[i, j] = sval[i, j]


def _sync_copies(ins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The wait and signal columns of the records ``ins`` as contiguous arrays (int32 semaphores, uint32
    values: the records' widths), :func:`_sync_columns`."""
    wsem, wval, ssem, sval = ins["wsem"], ins["wval"], ins["ssem"], ins["sval"]
    out = (np.empty(wsem.shape, np.int32), np.empty(wval.shape, np.uint32), np.empty(ssem.shape, np.int32),
           np.empty(sval.shape, np.uint32))
    _sync_columns(wsem, wval, ssem, sval, *out)
    return out


def supports(memory: MemoryModel) -> bool:
    """True if the kernel can time ``memory``: the shared rate pool of :class:`SimpleMemory` (or a subclass
    that keeps its ``transfer``: ``simple`` and ``dram``), with whatever :meth:`access` efficiencies and
    ``kappa`` / ``write_batch`` it has."""
    return isinstance(memory, SimpleMemory) and type(memory).transfer is SimpleMemory.transfer


def _col(a: np.ndarray, dtype: type = np.int64) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def run_numba(program: Program, chip: ChipConfig, costs: Costs, *, memory: MemoryModel,
              collectives: CollectiveTiming | None = None, log_memory: bool = False) -> EngineRun:
    """Simulate ``program`` on ``chip`` with precomputed ``costs`` (see the module docstring); the result is
    the reference engine's, field for field. ``memory`` must be supported (:func:`supports`)."""
    if not supports(memory):
        raise TypeError(f"the numba engine cannot time memory model {type(memory).__name__} (run mode='plain')")
    assert isinstance(memory, SimpleMemory)
    ins = program.instr
    n = len(ins)
    nchips = max(program.num_chips, 1)
    memory.reset(nchips, log=log_memory)
    coll = collectives if collectives is not None else make_collectives(chip)
    drows = costs.dma_rows
    # first (its per-instruction arrays are the largest temporaries here): the DMA rows' efficiencies
    access = memory.access(program, costs)
    eff_r, eff_w = _col(access.read_eff[drows], np.float64), _col(access.write_eff[drows], np.float64)
    del access
    streams = program.streams()
    keys = list(streams)
    ns = len(keys)
    op = ins["op"]
    nsem = max(len(program.semaphores), 1)

    # ---- per instruction (read in place where the program's columns serve, else the narrowest that fits) -------
    order = program.stream_order()  # the streams' instructions, stream after stream (shared, not copied)
    lens = np.array([len(streams[k]) for k in keys], dtype=np.int64)
    begin = np.zeros(ns, np.int64)
    np.cumsum(lens[:-1], out=begin[1:])
    wsem, wval, ssem, sval = _sync_copies(ins)
    if n > np.iinfo(np.int32).max:
        raise InfsimError(f"{n} instructions: more than the engine's 32-bit instruction indices hold")
    # instruction -> its row in the DMA columns (>= 0), its barrier b (-2 - b), or -1 (neither)
    xrow = np.full(n, -1, np.int32)
    xrow[drows] = np.arange(len(drows), dtype=np.int32)
    bar_rows = np.flatnonzero(op == int(Op.barrier))
    xrow[bar_rows] = -2 - np.arange(len(bar_rows), dtype=np.int32)
    bar_t = narrow_int32(barrier_targets(program)[bar_rows] if len(bar_rows) else np.zeros(0, np.int32),
                         "barrier target")  # per barrier
    bar_s = narrow_int32(ins["i0"][bar_rows], "barrier semaphore")
    own = _signal_latency(program, chip, costs, ssem, bar_rows)
    sigsuf, sg_ptr, sg_lst = _signallers(order, begin, lens, own, ssem, xrow, bar_s, nsem)
    del own
    plan = plan_collectives(program, costs.cc_src_bytes, costs.cc_dst_bytes)
    I = (order, wsem, wval, ssem, sval, bar_s, bar_t, _col(costs.busy_ps), _col(costs.lat_ps),
         sigsuf, xrow, plan.rdv_of)
    D = (_col(costs.dma_engine_ps.values), _col(costs.hbm_read.values), _col(costs.hbm_write.values),
         _col(costs.hbm_read_chip.values), _col(costs.hbm_write_chip.values), eff_r, eff_w,
         int(chip.dma.arbitration_bytes or 0), int(round(chip.dma.fixed_latency_ns * 1000)))

    # ---- semaphores: room for every signal, the streams that can signal each ----------------------------
    cap = np.zeros(nsem, np.int64)
    for j in range(ssem.shape[1]):
        cap += np.bincount(ssem[:, j][ssem[:, j] >= 0], minlength=nsem)[:nsem]
    cap += np.bincount(bar_s, minlength=nsem)[:nsem]
    off = np.zeros(nsem, np.int64)
    np.cumsum(cap[:-1], out=off[1:])
    total_sig = int(cap.sum())
    M = (off, np.zeros(nsem, np.int64), np.zeros(total_sig + 1, np.int64), np.zeros(total_sig + 1, np.int64),
         np.full(nsem, -1, np.int64), sg_ptr, sg_lst, np.zeros(nsem, np.int64))

    # ---- collectives ------------------------------------------------------------------------------------
    nr = len(plan.ops)
    dur, link = plan.durations(coll, program.cores_per_chip)
    rdv_ptr = np.zeros(nr + 1, np.int64)
    np.cumsum([len(x) for x in plan.instrs], out=rdv_ptr[1:])
    rdv_instr = np.array([i for x in plan.instrs for i in x], dtype=np.int64)
    R = (np.zeros(nr, np.int64), np.array([len(m) for m in plan.members], dtype=np.int64),
         np.full(nr, -1, np.int64), dur, rdv_ptr, _streams_of(program, keys, rdv_instr), rdv_instr)

    # ---- streams and DMA engines ---------------------------------------------------------------------------
    S = np.zeros((ns, K.NSCOL), np.int64)
    S[:, K.POS] = 0
    S[:, K.BEGIN] = begin
    S[:, K.LEN] = lens
    for col in (K.WSEM, K.WPREV, K.WNEXT, K.RDV, K.REM, K.ENG):
        S[:, col] = -1
    S[:, K.WAKE] = K.NEVER
    S[:, K.LATMIN] = sigsuf[order[begin]] if ns else 0
    eng = np.array([k[1] for k in keys], dtype=np.int64)
    S[:, K.KIND] = np.where(eng == int(Engine.dma), K.K_DMA, np.where(eng == int(Engine.cc), K.K_CC, K.K_COMPUTE))
    per_core = chip.dma.engines_per_core
    dma_of: dict[tuple[int, int], list[int]] = {}  # (core, engine) -> queues (stream ids, in stream order)
    for k, key in enumerate(keys):
        if key[1] == int(Engine.dma):
            dma_of.setdefault((key[0], key[2] % per_core), []).append(k)
    ekeys = sorted(dma_of)
    ne = len(ekeys)
    E = np.zeros((ne, K.NECOL), np.int64)
    E[:, K.EPEND] = -1
    equeues = np.array([k for ek in ekeys for k in dma_of[ek]], dtype=np.int64)
    pos = 0
    for e, ek in enumerate(ekeys):
        E[e, K.EQOFF] = pos
        E[e, K.ENQ] = len(dma_of[ek])
        pos += len(dma_of[ek])
        for k in dma_of[ek]:
            S[k, K.ENG] = e
    pcap = 4 * ne + 16  # live breakpoints: two per transfer in flight, at most one read and one write per engine
    P = (np.zeros((nchips, pcap), np.int64), np.zeros((nchips, pcap), np.float64),
         np.zeros((nchips, pcap), np.float64), np.zeros(nchips, np.int64), memory.peak_bpps, memory.latency_ps,
         np.zeros((nchips, 2), np.int64), float(memory.kappa), float(memory.write_batch))
    nlog = _log_capacity(costs, chip) if log_memory else 0
    log = (np.zeros(nlog, np.int64), np.zeros(nlog, np.int64), np.zeros(nlog, np.int64), np.zeros(nlog, np.int64),
           np.zeros(nlog, np.int64))
    start, end, occ = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)

    G = np.zeros(K.NGCOL, np.int64)
    release_free_heap()  # the setup's temporaries, before the kernel touches its tables (heap.py)
    status = K.run(I, D, M, R, P, (start, end, occ), S, E, G, equeues, log, K.workspace(ns, ne))
    if status == 1:
        raise _deadlock(program, keys, S, M, plan, order)
    if status != 0:
        raise AssertionError(f"numba engine: internal status {status}")
    del I, D, M, sigsuf, xrow, wsem, wval, ssem, sval, bar_s, bar_t  # the largest inputs, before the result

    # ---- result -----------------------------------------------------------------------------------------------
    s_end = np.maximum.reduceat(end[order], begin).tolist() if ns else []
    stats = [StreamStats(key, int(lens[k]), int(S[k, K.BUSY]), int(S[k, K.STALL]), s_end[k])
             for k, key in enumerate(keys)]
    moved = P[6]
    memory.bytes_read = moved[:, 0].tolist()
    memory.bytes_written = moved[:, 1].tolist()
    mem_log = None
    if log_memory:
        cnt = int(G[K.NLOG])
        mem_log = [(int(c), int(s), int(e), int(b), bool(w)) for c, s, e, b, w in zip(*(a[:cnt] for a in log))]
        memory.log = mem_log
    engine_of = {keys[k]: int(keys[k][2] % per_core) for k in range(ns) if keys[k][1] == int(Engine.dma)}
    return EngineRun(start, end, occ, stats, int(end.max()) if n else 0, memory.bytes_read, memory.bytes_written,
                     int(link[R[0] >= R[1]].sum()) if nr else 0, mem_log, engine_of)


def _log_capacity(costs: Costs, chip: ChipConfig) -> int:
    """Upper bound on the HBM requests of a run (one per chunk and direction)."""
    nbytes = np.maximum(costs.hbm_read.values, costs.hbm_write.values)
    cb = chip.dma.arbitration_bytes or 0
    chunks = (nbytes // cb + 2) if cb else np.ones(len(nbytes), np.int64)
    return int(2 * chunks.sum()) + 16


def _streams_of(program: Program, keys: list[tuple[int, int, int]], idx: np.ndarray) -> np.ndarray:
    """The stream (index into ``keys``) of each instruction of ``idx``."""
    ins = program.instr
    k_of = {key: k for k, key in enumerate(keys)}
    return np.array([k_of[(int(ins["core"][i]), int(ins["engine"][i]), int(ins["queue"][i]))] for i in idx.tolist()],
                    dtype=np.int64)


def _deadlock(program: Program, keys: list[tuple[int, int, int]], S: np.ndarray, M: tuple, plan: CollectivePlan,
              order: np.ndarray) -> Exception:
    """The reference's deadlock report from the kernel's final state."""
    off, cnt, cum = M[0], M[1], M[3]
    total = [int(cum[off[s] + cnt[s] - 1]) if cnt[s] else 0 for s in range(len(off))]
    core_of = program.instr["core"]
    sid = np.empty(len(core_of), np.int64)  # the stream of every instruction
    for k, idx in enumerate(program.streams().values()):
        sid[idx] = k
    stuck: list[tuple[int, tuple | None]] = []
    for k in range(len(keys)):
        if S[k, K.DONE]:
            continue
        i = int(order[S[k, K.BEGIN] + S[k, K.POS]]) if S[k, K.POS] < S[k, K.LEN] else -1
        if S[k, K.RDV] >= 0:
            r = int(S[k, K.RDV])
            arrived = sorted(int(core_of[x]) for x in plan.instrs[r] if S[sid[x], K.RDV] == r)
            stuck.append((k, ("collective", i, plan.members[r], arrived)))
        elif S[k, K.WSEM] >= 0:
            stuck.append((k, ("sem", i, int(S[k, K.WSEM]), int(S[k, K.WVAL]))))
        else:
            stuck.append((k, None))
    return deadlock_error(program, keys, stuck, total)
