"""The compiled core loop of the numba engine: every stream of every core of every chip of a run, the DMA
engines, the HBM rate profiles and the collective rendezvous advanced by one numba kernel, with exactly the
timing rules of the simpy reference engine (:mod:`infsim.engine.core`, ``mode='plain'``).

The Python side (:mod:`infsim.engine.numba_engine`) lays the program out in arrays and calls :func:`run`;
why its times equal the reference's, instruction by instruction, is argued there. What the loop does:

* **Events.** A binary heap of ``(time, key)``: ``key = k`` wakes stream ``k`` (a compute or collective
  stream whose wait has a known crossing at ``time``, or a DMA queue whose head becomes ready then);
  ``key = FLUSH + e`` is a round of DMA decisions of engine ``e``. Keys order ties: every wake-up of an
  instant comes before its DMA rounds, and a round takes the engines in index order (core, engine), as
  the reference's low-priority arbitration event does. Stale wake-ups (rescheduled earlier) are skipped.
* **Compute and collective streams run ahead** of the global clock: an instruction starts at
  ``max(free, crossing of each wait)`` as soon as every crossing is known and final (no stream that can
  still signal the semaphore can do so before it: the lookahead argued in :mod:`infsim.engine.numba_engine`, bounded
  by each signaller's clock, its suffix-minimum signal latency and, since signals of a stream take effect
  in program order, its latest signal). Otherwise the stream waits on the semaphore: a new signal
  re-examines it, and a known crossing schedules a wake-up at that time (final then, because every
  signal before the global clock is known).
* **Signals** go into per-semaphore lists sorted by time with running totals; a stream's signals take
  effect at ``max(completion, its previous signals)``. A zero-time DMA completion's signals are held
  until the end of its DMA round, as in the reference.
* **DMA rounds** replicate :mod:`infsim.engine.dma_arbiter` (round-robin queues per engine, arbitration
  chunks, HBM side timed on the chip's rate profile with :func:`infsim.engine.memory.simple.allocate`,
  the shared step function: each transfer at its instruction's access-pattern efficiency
  (:meth:`~infsim.engine.memory.MemoryModel.access`), reads and writes kept apart in the profile for the
  pool's read/write mixing cost ``kappa`` / ``write_batch``).
* **Collectives**: the last member to arrive completes the rendezvous; every member starts then and ends
  after the collective's duration (asked from the collective model before the run).

Speed: the loop's state is in arrays passed as tuples, and numba passes every array of a tuple field by field
to a function it calls, so a call with the instruction tables costs hundreds of copied words. The functions
on the per-event path that take those tuples (``_drain``, ``_advance``, ``_flush``, ``_head_ready``,
``_issue``, ``_apply_deferred``) are inlined into :func:`run` (numba's ``inline="always"``): the kernel
runs 2-2.5x faster for about 10% more compile time (cached on disk, ``cache=True``).

The state-table layout, the event heap and the semaphore signal lists are in :mod:`infsim.engine.kernel_sync`.

Status codes returned by :func:`run`: 0 finished, 1 deadlock (some stream cannot proceed), 2 the memory log
overflowed its preallocated size (a bug).
"""

from __future__ import annotations

import numpy as np

from infsim.jit import NO_NRT, njit_cached

from .kernel_sync import (  # noqa: F401  (names the loop and the engine read from here)
    ARRIVED,
    BEGIN,
    BUSY,
    CLOCK,
    DEFA,
    DEFN,
    DEND,
    DONE,
    EFREE,
    ENG,
    ENQ,
    EPEND,
    EQOFF,
    ERR,
    FLUSH,
    HSIZE,
    INQ,
    K_CC,
    K_COMPUTE,
    K_DMA,
    KIND,
    LATMIN,
    LEN,
    NDEFQ,
    NECOL,
    NEVER,
    NGCOL,
    NLOG,
    NOW,
    NSCOL,
    NWORK,
    POS,
    QWAIT,
    RDV,
    REM,
    REMRB,
    REMWB,
    RUN,
    STALL,
    WAKE,
    WNEXT,
    WPREV,
    WSEM,
    WVAL,
    _crossing,
    _final,
    _hpop,
    _hpush,
    _link,
    _push_work,
    _signal,
    _signal_time,
    _unlink,
)
from .memory.simple import allocate


# ---- compute and collective streams --------------------------------------------------------------------------
@njit_cached(**NO_NRT)
def _block(S: np.ndarray, G: np.ndarray, ht: np.ndarray, hk: np.ndarray, whead: np.ndarray, k: int, p: int,
           free: int, latmin: int, s: int, v: int, c: int) -> None:
    """Stream ``k`` waits at position ``p`` (free since ``free``) for ``s >= v``, known crossing ``c``."""
    S[k, POS] = p
    S[k, CLOCK] = free
    S[k, LATMIN] = latmin
    _link(S, whead, k, s, v)
    if c < S[k, WAKE]:
        S[k, WAKE] = c
        _hpush(ht, hk, G, S, c, k)


@njit_cached(**NO_NRT)
def _emit_signals(i: int, at: int, ssem: np.ndarray, sval: np.ndarray, M: tuple, S: np.ndarray, G: np.ndarray,
                  work: np.ndarray) -> None:
    for j in range(ssem.shape[1]):
        if ssem[i, j] >= 0:
            _signal(ssem[i, j], at, sval[i, j], M, S, G, work)


@njit_cached(**NO_NRT)
def _complete(r: int, I: tuple, M: tuple, R: tuple, out: tuple, S: np.ndarray, G: np.ndarray,
              work: np.ndarray, me: int) -> None:
    """Collective ``r``'s last member arrived: every member starts at the last arrival and ends after the
    collective's duration; the other members' streams are queued to go on."""
    order, wsem, wval, ssem, sval, bar_s, bar_t, busy, lat, sigsuf, xrow, rdv_of = I
    rdv_count, rdv_need, rdv_max, rdv_dur, rdv_ptr, rdv_stream, rdv_instr = R
    start_o, end_o, occ_o = out
    start = rdv_max[r]
    end = start + rdv_dur[r]
    for x in range(rdv_ptr[r], rdv_ptr[r + 1]):
        m = rdv_stream[x]
        i = rdv_instr[x]
        start_o[i] = start
        end_o[i] = end
        occ_o[i] = end
        S[m, STALL] += start - S[m, CLOCK]
        S[m, BUSY] += end - start
        if ssem[i, 0] >= 0 or ssem[i, 1] >= 0:
            _emit_signals(i, _signal_time(S, m, end), ssem, sval, M, S, G, work)
        S[m, RDV] = -1
        S[m, POS] += 1
        S[m, CLOCK] = end
        if m != me:
            S[m, RUN] = 1
            _push_work(S, G, work, m)


@njit_cached(**NO_NRT, inline="always")
def _advance(k: int, I: tuple, M: tuple, R: tuple, out: tuple, S: np.ndarray, G: np.ndarray, work: np.ndarray,
             ht: np.ndarray, hk: np.ndarray) -> None:
    """Run compute or collective stream ``k`` ahead until it finishes or must wait."""
    order, wsem, wval, ssem, sval, bar_s, bar_t, busy, lat, sigsuf, xrow, rdv_of = I
    off, cnt, sig_t, sig_cum, whead, sg_ptr, sg_lst, hint = M
    rdv_count, rdv_need, rdv_max, rdv_dur, rdv_ptr, rdv_stream, rdv_instr = R
    start_o, end_o, occ_o = out
    now = G[NOW]
    cc = S[k, KIND] == K_CC
    n = S[k, LEN]
    b0 = S[k, BEGIN]
    p = S[k, POS]
    t = S[k, CLOCK]
    while p < n:
        i = order[b0 + p]
        free = t
        for w in range(3):
            if w < 2:
                s = wsem[i, w]
                v = wval[i, w]
            else:
                x = xrow[i]  # -2 - (its barrier), if a barrier
                if x > -2:
                    break
                v = bar_t[-2 - x]
                s = bar_s[-2 - x]
                if S[k, ARRIVED] == 0:  # the barrier's arrival, then its wait
                    _signal(s, _signal_time(S, k, t), 1, M, S, G, work)
                    S[k, ARRIVED] = 1
            if s < 0:
                continue
            c = _crossing(s, v, off, cnt, sig_t, sig_cum, hint)
            if c <= t:
                continue
            if c <= now or (c < NEVER and _final(s, c, k, now, S, sg_ptr, sg_lst)):
                t = c
                continue
            _block(S, G, ht, hk, whead, k, p, free, sigsuf[i], s, v, c)
            return
        S[k, ARRIVED] = 0
        if cc and rdv_of[i] >= 0:  # a collective: arrive, and complete it if last
            r = rdv_of[i]
            rdv_count[r] += 1
            if t > rdv_max[r]:
                rdv_max[r] = t
            S[k, RDV] = r
            S[k, POS] = p
            S[k, CLOCK] = free
            S[k, LATMIN] = 0
            if rdv_count[r] < rdv_need[r]:
                return
            _complete(r, I, M, R, out, S, G, work, k)
            p = S[k, POS]
            t = S[k, CLOCK]
            continue
        start_o[i] = t
        S[k, STALL] += t - free
        if cc:  # a nop on a collective queue takes no time
            end_o[i] = t
            occ_o[i] = t
            if ssem[i, 0] >= 0 or ssem[i, 1] >= 0:
                _emit_signals(i, _signal_time(S, k, t), ssem, sval, M, S, G, work)
        else:
            end_o[i] = t + lat[i]
            occ_o[i] = t + busy[i]
            S[k, BUSY] += busy[i]
            if ssem[i, 0] >= 0 or ssem[i, 1] >= 0:
                _emit_signals(i, _signal_time(S, k, t + lat[i]), ssem, sval, M, S, G, work)
            t += busy[i]
        p += 1
    S[k, POS] = p
    S[k, CLOCK] = t
    S[k, DONE] = 1


# ---- DMA engines -----------------------------------------------------------------------------------------
@njit_cached(**NO_NRT)
def _schedule_flush(E: np.ndarray, G: np.ndarray, S: np.ndarray, ht: np.ndarray, hk: np.ndarray, e: int,
                    t: int) -> None:
    """A round of engine ``e``'s decisions at ``t`` (requests come in non-decreasing time per engine)."""
    if E[e, EPEND] != t:
        E[e, EPEND] = t
        _hpush(ht, hk, G, S, t, FLUSH + e)


@njit_cached(**NO_NRT, inline="always")
def _head_ready(q: int, I: tuple, M: tuple, S: np.ndarray, G: np.ndarray, ht: np.ndarray, hk: np.ndarray) -> bool:
    """True if the head of DMA queue ``q`` has its waits satisfied now; otherwise the queue waits on the
    first unsatisfied one (woken at its crossing)."""
    order, wsem, wval = I[0], I[1], I[2]
    off, cnt, sig_t, sig_cum, whead, hint = M[0], M[1], M[2], M[3], M[4], M[7]
    now = G[NOW]
    i = order[S[q, BEGIN] + S[q, POS]]
    for w in range(2):
        s = wsem[i, w]
        if s < 0:
            continue
        v = wval[i, w]
        c = _crossing(s, v, off, cnt, sig_t, sig_cum, hint)
        if c > now:
            S[q, QWAIT] = 1
            _link(S, whead, q, s, v)
            if c < S[q, WAKE]:
                S[q, WAKE] = c
                _hpush(ht, hk, G, S, c, q)
            return False
    return True


@njit_cached(**NO_NRT)
def _mem(chip: int, start: int, nbytes: int, is_write: int, eff: float, max_gbps: float, P: tuple,
         G: np.ndarray, log: tuple) -> int:
    """One request to ``chip``'s HBM: :meth:`infsim.engine.memory.simple.SimpleMemory.transfer` (the same
    arithmetic in the same order; ``P``'s ``kappa`` / ``batch``: the model's read/write mixing cost)."""
    prof_t, prof_r, prof_w, prof_m, peak, hbm_lat, moved, kappa, batch = P
    charged = nbytes
    if eff != 1.0:
        charged = round(nbytes / eff)
        max_gbps = max_gbps / eff
    max_rate = min(peak, max_gbps * 1e-3)
    data_end = start
    if charged > 0:
        end, m = allocate(prof_t[chip], prof_r[chip], prof_w[chip], prof_m[chip], start, float(charged), peak,
                          max_rate, is_write == 1, kappa, batch)
        prof_m[chip] = m
        data_end = end
    moved[chip, is_write] += nbytes
    log_c, log_s, log_e, log_b, log_w = log
    if log_c.shape[0] > 0:
        j = G[NLOG]
        if j < log_c.shape[0]:
            log_c[j] = chip
            log_s[j] = start
            log_e[j] = data_end
            log_b[j] = nbytes
            log_w[j] = is_write
        G[NLOG] = j + 1
    return data_end + hbm_lat


@njit_cached(**NO_NRT, inline="always")
def _issue(e: int, q: int, I: tuple, D: tuple, M: tuple, P: tuple, out: tuple, S: np.ndarray, E: np.ndarray,
           G: np.ndarray, work: np.ndarray, defq: np.ndarray, log: tuple) -> None:
    """Engine ``e`` serves the head of queue ``q`` now: a nop, or one chunk of a transfer
    (:meth:`infsim.engine.dma_arbiter.DmaArbiter._issue`)."""
    order, ssem, sval, sigsuf, xrow = I[0], I[3], I[4], I[9], I[10]
    d_ps, rb_a, wb_a, rchip, wchip, eff_r, eff_w, chunk_b, fixed = D
    hbm_lat = P[5]
    start_o, end_o, occ_o = out
    now = G[NOW]
    p = S[q, POS]
    i = order[S[q, BEGIN] + p]
    if S[q, REM] < 0:  # the transfer's first chunk
        S[q, STALL] += now - S[q, CLOCK]
        start_o[i] = now
    j = xrow[i]  # the transfer's row in the DMA columns ``D`` (< 0: a nop)
    if j < 0:
        data_end = now
        comp = now
    else:
        d = d_ps[j]
        rb = rb_a[j]
        wb = wb_a[j]
        if S[q, REM] < 0:
            S[q, REM] = d
            S[q, REMRB] = rb
            S[q, REMWB] = wb
            S[q, DEND] = now
        nbytes = max(rb, wb, 1)
        if chunk_b > 0 and nbytes > chunk_b and S[q, REM] * nbytes > chunk_b * d:
            cd = d * chunk_b // nbytes
            crb = min(S[q, REMRB], rb * chunk_b // nbytes)
            cwb = min(S[q, REMWB], wb * chunk_b // nbytes)
        else:
            cd, crb, cwb = S[q, REM], S[q, REMRB], S[q, REMWB]
        S[q, REM] -= cd
        S[q, REMRB] -= crb
        S[q, REMWB] -= cwb
        occ = now + cd
        if crb:
            end = _mem(rchip[j], now, crb, 0, eff_r[j], rb / max(d, 1) * 1000.0, P, G, log)
            occ = max(occ, end - hbm_lat)
            S[q, DEND] = max(S[q, DEND], end)
        if cwb:
            end = _mem(wchip[j], now, cwb, 1, eff_w[j], wb / max(d, 1) * 1000.0, P, G, log)
            occ = max(occ, end - hbm_lat)
            S[q, DEND] = max(S[q, DEND], end)
        E[e, EFREE] = occ
        S[q, CLOCK] = occ
        S[q, BUSY] += occ - now
        if S[q, REM] > 0:  # more chunks: the engine takes the next queue's turn first
            S[q, LATMIN] = 0
            return
        S[q, REM] = -1
        comp = max(occ, S[q, DEND]) + fixed
        data_end = occ
    E[e, EFREE] = data_end
    S[q, CLOCK] = data_end
    S[q, POS] = p + 1
    end_o[i] = comp
    occ_o[i] = data_end
    if ssem[i, 0] >= 0 or ssem[i, 1] >= 0:
        at = _signal_time(S, q, comp)
        if at == now:  # zero-time completion: its signals wait for the end of this round
            if S[q, DEFN] == 0:
                S[q, DEFA] = p
                defq[G[NDEFQ]] = q
                G[NDEFQ] += 1
            S[q, DEFN] += 1
        else:
            _emit_signals(i, at, ssem, sval, M, S, G, work)
    if S[q, DEFN] > 0:
        S[q, LATMIN] = 0
    elif p + 1 < S[q, LEN]:
        S[q, LATMIN] = sigsuf[order[S[q, BEGIN] + p + 1]]
    if p + 1 >= S[q, LEN] and S[q, DEFN] == 0:
        S[q, DONE] = 1


@njit_cached(**NO_NRT, inline="always")
def _flush(e: int, I: tuple, D: tuple, M: tuple, P: tuple, out: tuple, S: np.ndarray, E: np.ndarray,
           G: np.ndarray, work: np.ndarray, defq: np.ndarray, log: tuple, equeues: np.ndarray, ht: np.ndarray,
           hk: np.ndarray) -> None:
    """Engine ``e``'s decisions now (:meth:`infsim.engine.dma_arbiter.DmaArbiter._flush`)."""
    now = G[NOW]
    nq = E[e, ENQ]
    q0 = E[e, EQOFF]
    while E[e, EFREE] <= now:
        issued = False
        for r in range(nq):
            q = equeues[q0 + (E[e, ERR] + r) % nq]
            if S[q, QWAIT] != 0 or S[q, POS] >= S[q, LEN] or not _head_ready(q, I, M, S, G, ht, hk):
                continue
            _issue(e, q, I, D, M, P, out, S, E, G, work, defq, log)
            E[e, ERR] = (E[e, ERR] + r + 1) % nq
            issued = True
            break
        if not issued:
            break
    if E[e, EFREE] > now:
        need = False
        for r in range(nq):
            q = equeues[q0 + r]
            if S[q, QWAIT] == 0 and S[q, POS] < S[q, LEN] and _head_ready(q, I, M, S, G, ht, hk):
                need = True
        if need:
            _schedule_flush(E, G, S, ht, hk, e, E[e, EFREE])


@njit_cached(**NO_NRT, inline="always")
def _apply_deferred(I: tuple, M: tuple, S: np.ndarray, G: np.ndarray, work: np.ndarray, defq: np.ndarray) -> None:
    """Apply the zero-time DMA completions' signals held during the round, at now."""
    order, ssem, sval, sigsuf = I[0], I[3], I[4], I[9]
    now = G[NOW]
    for x in range(G[NDEFQ]):
        q = defq[x]
        left = S[q, DEFN]
        p = S[q, DEFA]
        b0 = S[q, BEGIN]
        S[q, DEFN] = 0
        if S[q, POS] < S[q, LEN]:
            S[q, LATMIN] = 0 if S[q, REM] > 0 else sigsuf[order[b0 + S[q, POS]]]
        else:
            S[q, DONE] = 1
        while left > 0:
            i = order[b0 + p]
            if ssem[i, 0] >= 0 or ssem[i, 1] >= 0:
                _emit_signals(i, now, ssem, sval, M, S, G, work)
                left -= 1
            p += 1
    G[NDEFQ] = 0


@njit_cached(**NO_NRT, inline="always")
def _drain(I: tuple, M: tuple, R: tuple, out: tuple, S: np.ndarray, E: np.ndarray, G: np.ndarray,
           work: np.ndarray, ht: np.ndarray, hk: np.ndarray) -> None:
    """Re-examine every queued stream: compute and collective streams run ahead as far as they can; a
    waiting DMA queue whose head is now ready asks its engine for a round."""
    off, cnt, sig_t, sig_cum, whead, hint = M[0], M[1], M[2], M[3], M[4], M[7]
    now = G[NOW]
    while G[NWORK] > 0:
        G[NWORK] -= 1
        k = work[G[NWORK]]
        S[k, INQ] = 0
        if S[k, DONE] != 0:
            continue
        if S[k, KIND] == K_DMA:
            if S[k, QWAIT] == 0:
                continue
            c = _crossing(S[k, WSEM], S[k, WVAL], off, cnt, sig_t, sig_cum, hint)
            if c <= now:
                _unlink(S, whead, k)
                S[k, QWAIT] = 0
                e = S[k, ENG]
                _schedule_flush(E, G, S, ht, hk, e, max(now, E[e, EFREE]))
            elif c < S[k, WAKE]:
                S[k, WAKE] = c
                _hpush(ht, hk, G, S, c, k)
            continue
        if S[k, WSEM] >= 0:
            _unlink(S, whead, k)
        elif S[k, RUN] == 0:
            continue
        S[k, RUN] = 0
        _advance(k, I, M, R, out, S, G, work, ht, hk)


def workspace(ns: int, ne: int) -> tuple[np.ndarray, ...]:
    """The loop's scratch arrays for ``ns`` streams and ``ne`` DMA engines: the event heap (times, keys; live
    entries: one wake-up per stream and one round per engine), the work stack, the queues holding
    zero-time signals, a round's engines. (The kernel runs without numba's reference counting, which
    costs more than the simulation in calls passing many arrays; so it allocates nothing itself.)"""
    cap = 2 * (ns + ne) + 64
    return (np.zeros(cap, np.int64), np.zeros(cap, np.int64), np.zeros(ns, np.int64), np.zeros(ns, np.int64),
            np.zeros(ne, np.int64))


# ---- the loop --------------------------------------------------------------------------------------------
@njit_cached(**NO_NRT)
def run(I: tuple, D: tuple, M: tuple, R: tuple, P: tuple, out: tuple, S: np.ndarray, E: np.ndarray,
        G: np.ndarray, equeues: np.ndarray, log: tuple, W: tuple) -> int:
    """Simulate to the end (module docstring). ``S``/``E`` come initialised per stream / engine, ``G`` zeroed,
    ``W`` the work space (:func:`workspace`); returns the status."""
    ns = S.shape[0]
    ne = E.shape[0]
    ht, hk, work, defq, rnd = W
    for k in range(ns):
        if S[k, KIND] != K_DMA:
            S[k, RUN] = 1
            _push_work(S, G, work, k)
    _drain(I, M, R, out, S, E, G, work, ht, hk)
    for e in range(ne):
        _schedule_flush(E, G, S, ht, hk, e, 0)
    while G[HSIZE] > 0:
        t, key = _hpop(ht, hk, G)
        G[NOW] = t
        if key >= FLUSH:
            n = 0
            while True:  # this round: every engine with a round at t, in index order
                e = key - FLUSH
                if E[e, EPEND] == t:
                    E[e, EPEND] = -1
                rnd[n] = e
                n += 1
                if G[HSIZE] == 0 or ht[0] != t or hk[0] < FLUSH:
                    break
                t, key = _hpop(ht, hk, G)
            for x in range(n):
                _flush(rnd[x], I, D, M, P, out, S, E, G, work, defq, log, equeues, ht, hk)
            _apply_deferred(I, M, S, G, work, defq)
        else:
            k = key
            if S[k, WAKE] != t:
                continue  # rescheduled earlier
            S[k, WAKE] = NEVER
            if S[k, KIND] == K_DMA:
                if S[k, QWAIT] != 0:
                    _push_work(S, G, work, k)
            elif S[k, WSEM] >= 0:
                _push_work(S, G, work, k)
        _drain(I, M, R, out, S, E, G, work, ht, hk)
    for k in range(ns):
        if S[k, DONE] == 0:
            return 1
    if log[0].shape[0] > 0 and G[NLOG] > log[0].shape[0]:
        return 2
    return 0
