"""The program-level analytical fidelity (``simulate(program, chip, fidelity='analytical')``): closed-form
cost per instruction, a dependency scoreboard, and bandwidth bounds (see :mod:`infsim.fidelity`).

No discrete-event engine and no shared-resource arbitration. Every instruction gets a fixed duration:

* compute engines: the same closed forms as the cycle engine (systolic ``matmul_timing``,
  elementwise costs; :mod:`infsim.engine.costs`);
* DMA: occupies its queue for the engine time (descriptors + bytes at the engine bandwidth); completes
  after that + the memory model's latency when HBM is involved + ``dma.fixed_latency_ns``. Every queue is its own
  stream (queues sharing a DMA engine and HBM contention are not modelled here; the bounds below account
  for them);
* collectives: a rendezvous of the group (modelled exactly like a barrier) followed by the duration
  of the engine's collective model (:func:`infsim.engine.collectives.make_collectives`).

A numba scoreboard then computes every start time ``start_i = max(free_i, crossing of each wait)``
over all streams at once (semaphore crossings from the completions of the signalling instructions,
each stream's signals taking effect in program order as in the engine; conservative lookahead as in
the numba cycle engine (:mod:`infsim.engine.numba_engine`), with a global clock instead of an event queue).
The critical-path makespan is finally raised to the resource bounds: per chip, the HBM pin time of its
transfers (:func:`hbm_pin_bytes`: each transfer's bytes over the memory model's efficiency for its access
pattern, :meth:`~infsim.engine.memory.MemoryModel.access` -- 1 for ``simple``, the DRAM-level figure for
``dram`` -- plus the pool's read/write mixing cost) over the pin bandwidth, plus its latency; per DMA
engine, the sum of its queues' occupancy.

Left out (by design): HBM contention timing, DMA-engine sharing order, link contention. Expected to
stay within ~10 % of the cycle engine on the example programs (tested).
"""

from __future__ import annotations

import time

import numpy as np

from infsim.config.schema import ChipConfig
from infsim.engine.collectives import make_collectives
from infsim.engine.costs import Costs, compute_costs
from infsim.engine.memory import MemoryModel, make_memory
from infsim.engine.streams import barrier_targets
from infsim.errors import InfsimError
from infsim.isa.errors import DeadlockError
from infsim.isa.opcodes import Engine, Op
from infsim.isa.program import Program
from infsim.jit import njit_cached
from infsim.result import SimResult, Timeline, build_result

NEVER = np.int64(1 << 62)


@njit_cached()
def _crossing(s: int, v: int, sig_t: np.ndarray, sig_cum: np.ndarray, off: np.ndarray, cnt: np.ndarray) -> int:
    """Earliest known time at which semaphore ``s`` reaches ``v`` (``NEVER`` if the known signals do not)."""
    if v <= 0:
        return -1
    a = off[s]
    b = a + cnt[s]
    if b == a or sig_cum[b - 1] < v:
        return 1 << 62
    lo, hi = a, b - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if sig_cum[mid] >= v:
            hi = mid
        else:
            lo = mid + 1
    return sig_t[lo]


@njit_cached()
def _add_signal(s: int, t: int, inc: int, sig_t: np.ndarray, sig_v: np.ndarray, sig_cum: np.ndarray,
                off: np.ndarray, cnt: np.ndarray) -> None:
    a = off[s]
    j = a + cnt[s]
    while j > a and sig_t[j - 1] > t:
        sig_t[j] = sig_t[j - 1]
        sig_v[j] = sig_v[j - 1]
        j -= 1
    sig_t[j] = t
    sig_v[j] = inc
    cnt[s] += 1
    acc = sig_cum[j - 1] if j > a else 0
    for x in range(j, a + cnt[s]):
        acc += sig_v[x]
        sig_cum[x] = acc


@njit_cached()
def _scoreboard(order: np.ndarray, s_begin: np.ndarray, s_len: np.ndarray, busy: np.ndarray, lat: np.ndarray,
                waits_s: np.ndarray, waits_v: np.ndarray, bar_s: np.ndarray, bar_t: np.ndarray,
                sig_s: np.ndarray, sig_v_in: np.ndarray, sg_ptr: np.ndarray, sg_list: np.ndarray,
                off: np.ndarray, cap_total: int, start: np.ndarray, stall: np.ndarray,
                blocked: np.ndarray, totals: np.ndarray) -> tuple[int, int, int]:
    """Start times of every instruction; returns (status, stream, instruction): status 0 ok, 1 deadlock. On a
    deadlock ``blocked[k]`` holds (instruction, semaphore, value, slot) of the wait that stream ``k`` can never
    pass (slot 2: a barrier or collective rendezvous; instruction -1 for a finished stream) and ``totals[s]``
    the value semaphore ``s`` reaches."""
    ns = s_begin.shape[0]
    nsem = off.shape[0]
    sig_t = np.zeros(cap_total + 1, np.int64)
    sig_v = np.zeros(cap_total + 1, np.int64)
    sig_cum = np.zeros(cap_total + 1, np.int64)
    cnt = np.zeros(nsem, np.int64)
    pos = np.zeros(ns, np.int64)
    t = np.zeros(ns, np.int64)
    free = np.zeros(ns, np.int64)
    arrived = np.zeros(ns, np.bool_)
    last_sig = np.zeros(ns, np.int64)  # when the stream's latest signals took effect
    done = np.zeros(ns, np.bool_)
    now = 0
    big = 1 << 62
    while True:
        progress = True
        while progress:
            progress = False
            for k in range(ns):
                while pos[k] < s_len[k]:
                    i = order[s_begin[k] + pos[k]]
                    ok = True
                    for w in range(3):
                        if w < 2:
                            s = waits_s[i, w]
                            v = waits_v[i, w]
                        else:
                            s = bar_s[i]
                            v = bar_t[i]
                            if s >= 0 and not arrived[k]:
                                if t[k] > last_sig[k]:
                                    last_sig[k] = t[k]
                                _add_signal(s, last_sig[k], 1, sig_t, sig_v, sig_cum, off, cnt)
                                arrived[k] = True
                        if s < 0:
                            continue
                        c = _crossing(s, v, sig_t, sig_cum, off, cnt)
                        if c <= t[k]:
                            continue
                        if c <= now:
                            t[k] = c
                            continue
                        if c < big:
                            fin = True
                            for x in range(sg_ptr[s], sg_ptr[s + 1]):
                                m = sg_list[x]
                                if m == k or done[m]:
                                    continue
                                lb = t[m] if t[m] > now else now
                                if lb < c:
                                    fin = False
                                    break
                            if fin:
                                t[k] = c
                                continue
                        ok = False
                        break
                    if not ok:
                        break
                    start[i] = t[k]
                    stall[k] += t[k] - free[k]
                    comp = t[k] + lat[i]
                    for j in range(sig_s.shape[1]):
                        if sig_s[i, j] >= 0:
                            if comp > last_sig[k]:  # signals of a stream take effect in program order
                                last_sig[k] = comp
                            _add_signal(sig_s[i, j], last_sig[k], sig_v_in[i, j], sig_t, sig_v, sig_cum, off, cnt)
                    t[k] += busy[i]
                    free[k] = t[k]
                    arrived[k] = False
                    pos[k] += 1
                    progress = True
                if pos[k] >= s_len[k] and not done[k]:
                    done[k] = True
        # advance the global clock to the earliest known crossing among blocked streams
        tmin = big
        kmin = -1
        for k in range(ns):
            if done[k]:
                continue
            i = order[s_begin[k] + pos[k]]
            for w in range(3):
                if w < 2:
                    s = waits_s[i, w]
                    v = waits_v[i, w]
                else:
                    s = bar_s[i]
                    v = bar_t[i]
                if s < 0:
                    continue
                c = _crossing(s, v, sig_t, sig_cum, off, cnt)
                if c > t[k] and c > now:
                    if c < tmin:
                        tmin = c
                    break
            if kmin < 0:
                kmin = k
        if kmin < 0:
            return 0, -1, -1
        if tmin >= big:
            for k in range(ns):
                blocked[k, 0] = -1
                if done[k]:
                    continue
                i = order[s_begin[k] + pos[k]]
                blocked[k, 0] = i
                for w in range(3):
                    s = waits_s[i, w] if w < 2 else bar_s[i]
                    v = waits_v[i, w] if w < 2 else bar_t[i]
                    if s >= 0 and _crossing(s, v, sig_t, sig_cum, off, cnt) >= big:
                        blocked[k, 1] = s
                        blocked[k, 2] = v
                        blocked[k, 3] = w
                        break
            for x in range(nsem):
                totals[x] = sig_cum[off[x] + cnt[x] - 1] if cnt[x] > 0 else 0
            return 1, kmin, order[s_begin[kmin] + pos[kmin]]
        now = tmin


def _deadlock_message(program: Program, keys: list[tuple[int, int, int]], op: np.ndarray, blocked: np.ndarray,
                      totals: np.ndarray, rendezvous: dict[int, tuple]) -> str:
    """Every stuck stream, its instruction and what it waits for (semaphore, value, the value it reaches),
    like the cycle engine's report. ``rendezvous`` maps the scoreboard's synthetic semaphores of collectives
    to their (kind, id)."""
    names = program.semaphores
    groups = list(program.groups)
    lines = []
    for k, (i, s, v, w) in enumerate(blocked.tolist()):
        if i < 0:
            continue
        core, e, q = keys[k]
        where = f"core {core} engine {Engine(e).name} queue {q}: instruction {i} ({Op(int(op[i])).name})"
        if s < 0:
            lines.append(f"{where} can never start")
        elif s in rendezvous:
            base = rendezvous[s]
            partners = f"group '{groups[base[1]]}'" if base[0] == "group" else f"cores {base[1]} (send/recv)"
            lines.append(f"{where} waits for the cores of {partners} ({int(totals[s])} of {v} arrivals)")
        elif w == 2:
            lines.append(f"{where} waits at a barrier on semaphore '{names[s]}' for {v} arrivals; only "
                         f"{int(totals[s])} arrive")
        else:
            lines.append(f"{where} waits on semaphore '{names[s]}' >= {v}, which only reaches {int(totals[s])}")
    return "deadlock (analytical scoreboard): " + "; ".join(lines)


def _durations(program: Program, chip: ChipConfig, costs: Costs,
               hbm_lat: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """busy, lat and the link bytes per instruction in the analytical model (``hbm_lat``: HBM latency, ps)."""
    busy = costs.busy_ps.copy()
    lat = costs.lat_ps.copy()
    op = program.instr["op"].astype(np.int64)
    dma = op == int(Op.dma_copy)
    fixed = int(round(chip.dma.fixed_latency_ns * 1000))
    d = costs.dma_rows
    assert np.array_equal(d, np.flatnonzero(dma))  # the DMA columns live on the dma_copy instructions
    has_hbm = (costs.hbm_read.values + costs.hbm_write.values) > 0
    occ = costs.dma_engine_ps.values  # the HBM latency does not occupy the engine (requests pipeline)
    busy[d] = occ
    lat[d] = occ + np.where(has_hbm, hbm_lat, 0) + fixed
    link = np.zeros(len(op), dtype=np.int64)
    return busy, lat, link


def hbm_pin_bytes(program: Program, costs: Costs, memory: MemoryModel, nchips: int) -> np.ndarray:
    """Per chip, the bytes of HBM pin time the program's transfers occupy: each transfer's bytes over its
    access-pattern efficiency (:meth:`MemoryModel.access`), plus the read/write mixing cost of the memory
    model's pool with all of a chip's reads and writes taken as concurrent (``kappa x min(w / W, r)``)."""
    acc = memory.access(program, costs)
    reads = np.zeros(nchips)
    writes = np.zeros(nchips)
    d = costs.dma_rows  # elsewhere no bytes: adding their zeros changes no sum
    np.add.at(reads, costs.hbm_read_chip.values, costs.hbm_read.values / acc.read_eff[d])
    np.add.at(writes, costs.hbm_write_chip.values, costs.hbm_write.values / acc.write_eff[d])
    return reads + writes + memory.kappa * np.minimum(writes / memory.write_batch, reads)


def analyze(program: Program, chip: ChipConfig, *, costs: Costs | None = None, memory: MemoryModel | None = None,
            trace: bool = False, t0: float | None = None) -> SimResult:
    """The analytical estimate of ``program`` on ``chip`` (see the module docstring); ``memory``: the HBM
    model whose streaming bandwidth and latency it uses (default: the chip's ``hbm.memory_model``)."""
    t0 = time.perf_counter() if t0 is None else t0
    costs = compute_costs(program, chip) if costs is None else costs
    memory = make_memory(chip) if memory is None else memory
    hbm_lat = memory.latency_ps
    ins = program.instr
    n = len(ins)
    op = ins["op"].astype(np.int64)
    busy, lat, link = _durations(program, chip, costs, hbm_lat)
    streams = program.streams()
    keys = list(streams)
    nsem0 = len(program.semaphores)
    # barriers as in the engine; collectives become barriers on synthetic semaphores
    is_bar = op == int(Op.barrier)
    bar_s = np.where(is_bar, ins["i0"].astype(np.int64), -1)
    bar_t = barrier_targets(program)
    synth: dict[tuple, int] = {}
    coll = make_collectives(chip)
    seqs: dict[tuple, int] = {}
    group_names = list(program.groups)
    link_bytes = 0
    cc_idx = np.flatnonzero(np.isin(op, [int(o) for o in (Op.all_reduce, Op.all_gather, Op.reduce_scatter,
                                                            Op.send, Op.recv)]))
    for i in cc_idx.tolist():
        o = Op(int(op[i]))
        core = int(ins["core"][i])
        if o in (Op.send, Op.recv):
            peer, tag = int(ins["i0"][i]), int(ins["i1"][i])
            pair = (core, peer) if o == Op.send else (peer, core)
            base: tuple = ("p2p", pair, tag)
            members: tuple[int, ...] = pair
        else:
            gid = int(ins["i0"][i])
            members = program.groups[group_names[gid]]
            base = ("group", gid)
        sk = (base, core)
        seqs[sk] = seqs.get(sk, 0) + 1
        if base not in synth:
            synth[base] = nsem0 + len(synth)
        bar_s[i] = synth[base]
        bar_t[i] = seqs[sk] * len(members)
        dur, lb = coll.duration_ps(o, members, int(costs.cc_src_bytes[i]), int(costs.cc_dst_bytes[i]),
                                   program.cores_per_chip)
        busy[i] = lat[i] = dur
        link_bytes += lb
    nsem = nsem0 + len(synth)
    # stream layout
    order = np.concatenate([streams[k] for k in keys]) if keys else np.zeros(0, dtype=np.int64)
    s_len = np.array([len(streams[k]) for k in keys], dtype=np.int64)
    s_begin = np.concatenate([[0], np.cumsum(s_len)[:-1]]).astype(np.int64) if keys else np.zeros(0, np.int64)
    sid = np.empty(n, dtype=np.int64)
    for k, key in enumerate(keys):
        sid[streams[key]] = k
    ssem = ins["ssem"].astype(np.int64)
    sval = ins["sval"].astype(np.int64)
    # signal capacity and signalers per semaphore
    sem_ids = [ssem[:, j][ssem[:, j] >= 0] for j in range(ssem.shape[1])] + [bar_s[bar_s >= 0]]
    src_ids = [sid[ssem[:, j] >= 0] for j in range(ssem.shape[1])] + [sid[bar_s >= 0]]
    all_sem = np.concatenate(sem_ids) if sem_ids else np.zeros(0, np.int64)
    all_src = np.concatenate(src_ids) if src_ids else np.zeros(0, np.int64)
    cap = np.bincount(all_sem, minlength=max(nsem, 1)).astype(np.int64)
    off = np.concatenate([[0], np.cumsum(cap)[:-1]]).astype(np.int64)
    pairs = np.unique(all_sem * (len(keys) + 1) + all_src) if len(all_sem) else np.zeros(0, np.int64)
    psem, pstream = pairs // (len(keys) + 1), pairs % (len(keys) + 1)
    sg_ptr = np.concatenate([[0], np.cumsum(np.bincount(psem, minlength=max(nsem, 1)))]).astype(np.int64)
    sg_list = pstream.astype(np.int64)
    start = np.zeros(n, dtype=np.int64)
    stall = np.zeros(len(keys), dtype=np.int64)
    blocked = np.full((len(keys), 4), -1, dtype=np.int64)
    totals = np.zeros(max(nsem, 1), dtype=np.int64)
    status, k_bad, i_bad = _scoreboard(order.astype(np.int64), s_begin, s_len, busy, lat,
                                       ins["wsem"].astype(np.int64), ins["wval"].astype(np.int64), bar_s, bar_t,
                                       ssem, sval, sg_ptr, sg_list, off, int(cap.sum()), start, stall, blocked,
                                       totals)
    if status == 1:
        rendezvous = {v: k for k, v in synth.items()}
        raise DeadlockError(_deadlock_message(program, keys, op, blocked, totals, rendezvous))
    end = start + lat
    makespan = int(end.max()) if n else 0
    # resource bounds
    bounds = [makespan]
    not_dma = np.ones(n, bool)
    not_dma[costs.dma_rows] = False  # there the chip columns hold the issuing core's chip
    core_chip = int(ins["core"][not_dma].max(initial=0)) // program.cores_per_chip
    nchips = int(max(costs.hbm_read_chip.values.max(initial=0), costs.hbm_write_chip.values.max(initial=0),
                     core_chip)) + 1
    for b in hbm_pin_bytes(program, costs, memory, nchips):
        if b > 0:
            bounds.append(int(np.ceil(b / memory.peak_bpps)) + hbm_lat)
    dma = op == int(Op.dma_copy)
    if dma.any():
        eng_of = ins["core"].astype(np.int64) * 4096 + ins["queue"].astype(np.int64) % chip.dma.engines_per_core
        occ = np.bincount(eng_of[dma], weights=busy[dma])
        bounds.append(int(occ.max()))
    total = max(bounds)
    stats = []
    for k, key in enumerate(keys):
        idx = streams[key]
        stats.append((key, len(idx), int(busy[idx].sum()), int(stall[k]), int(end[idx].max())))
    timeline = Timeline(start, end, start + busy, op.astype(np.uint8), streams, None) if trace else None
    return build_result(program, chip, costs, fidelity="analytical", total_ps=total, stream_stats=stats,
                        hbm_read=int(costs.hbm_read.sum()), hbm_write=int(costs.hbm_write.sum()),
                        link_bytes=link_bytes, wall_s=time.perf_counter() - t0, timeline=timeline)


__all__ = ["analyze", "InfsimError"]
