"""Events and semaphores of the numba engine's kernel (:mod:`infsim.engine.kernel`): the state-table column
layout shared by every kernel function, the event heap of ``(time, key)``, and the per-semaphore signal lists
with their known-crossing lookup (galloping search from the previous answer) and waiter lists. Compiled
functions only; the loop that uses them, and why its times equal the reference engine's, are in
:mod:`infsim.engine.kernel` and :mod:`infsim.engine.numba_engine`.
"""

from __future__ import annotations

import numpy as np

from infsim.jit import NO_NRT, njit_cached  # NO_NRT: these functions allocate nothing (infsim.jit)

NEVER = 1 << 62
FLUSH = 1 << 40  # heap keys >= FLUSH are DMA rounds of engine key - FLUSH

K_COMPUTE, K_DMA, K_CC = 0, 1, 2  # stream kinds

# per-stream state: S[k, column]
(POS, CLOCK, LATMIN, LASTSIG, DONE, ARRIVED, STALL, BUSY, WSEM, WVAL, WAKE, WPREV, WNEXT, INQ, RUN, KIND, BEGIN,
 LEN, RDV, REM, REMRB, REMWB, DEND, DEFA, DEFN, ENG, QWAIT, NSCOL) = range(28)
# per DMA engine: E[e, column]
EFREE, ERR, EQOFF, ENQ, EPEND, NECOL = range(6)
# run-wide scalars: G[index]
NOW, HSIZE, NWORK, NDEFQ, NLOG, NGCOL = range(6)


# ---- event heap ------------------------------------------------------------------------------------------
@njit_cached(**NO_NRT)
def _less(ta: int, ka: int, tb: int, kb: int) -> bool:
    return ta < tb or (ta == tb and ka < kb)


@njit_cached(**NO_NRT)
def _hpush(ht: np.ndarray, hk: np.ndarray, G: np.ndarray, S: np.ndarray, t: int, key: int) -> None:
    n = G[HSIZE]
    if n == ht.shape[0]:  # drop stale wake-ups (the live entries always fit: one per stream and engine)
        m = 0
        for j in range(n):
            k = hk[j]
            if k >= FLUSH or S[k, WAKE] == ht[j]:
                ht[m] = ht[j]
                hk[m] = hk[j]
                m += 1
        n = m
        for j in range(n // 2 - 1, -1, -1):
            _sift_down(ht, hk, n, j)
    j = n
    ht[j] = t
    hk[j] = key
    while j > 0:
        p = (j - 1) >> 1
        if _less(ht[j], hk[j], ht[p], hk[p]):
            ht[j], ht[p] = ht[p], ht[j]
            hk[j], hk[p] = hk[p], hk[j]
            j = p
        else:
            break
    G[HSIZE] = n + 1


@njit_cached(**NO_NRT)
def _sift_down(ht: np.ndarray, hk: np.ndarray, n: int, j: int) -> None:
    while True:
        a = 2 * j + 1
        if a >= n:
            return
        b = a + 1
        c = b if b < n and _less(ht[b], hk[b], ht[a], hk[a]) else a
        if _less(ht[c], hk[c], ht[j], hk[j]):
            ht[j], ht[c] = ht[c], ht[j]
            hk[j], hk[c] = hk[c], hk[j]
            j = c
        else:
            return


@njit_cached(**NO_NRT)
def _hpop(ht: np.ndarray, hk: np.ndarray, G: np.ndarray) -> tuple[int, int]:
    t, k = ht[0], hk[0]
    n = G[HSIZE] - 1
    G[HSIZE] = n
    if n > 0:
        ht[0] = ht[n]
        hk[0] = hk[n]
        _sift_down(ht, hk, n, 0)
    return t, k


# ---- semaphores --------------------------------------------------------------------------------------------
@njit_cached(**NO_NRT)
def _crossing(s: int, v: int, off: np.ndarray, cnt: np.ndarray, sig_t: np.ndarray, sig_cum: np.ndarray,
              hint: np.ndarray) -> int:
    """The time the known signals of ``s`` reach ``v`` (-1 if ``v <= 0``, ``NEVER`` if they do not).

    A galloping search from ``hint[s]`` (the previous answer on ``s``): waits on one semaphore ask for
    nearby values, so it touches a few neighbouring entries instead of a binary search's cache misses
    over the whole list."""
    if v <= 0:
        return -1
    a = off[s]
    last = a + cnt[s] - 1
    if last < a or sig_cum[last] < v:
        return NEVER
    h = hint[s]
    if h < a or h > last:
        h = last
    if sig_cum[h] >= v:  # the answer is in (lo, hi]: gallop left
        hi = h
        step = 1
        while True:
            lo = hi - step
            if lo < a:
                lo = a - 1
                break
            if sig_cum[lo] < v:
                break
            hi = lo
            step <<= 1
    else:  # gallop right
        lo = h
        step = 1
        while True:
            hi = lo + step
            if hi >= last:
                hi = last
                break
            if sig_cum[hi] >= v:
                break
            lo = hi
            step <<= 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if sig_cum[mid] >= v:
            hi = mid
        else:
            lo = mid
    hint[s] = hi
    return sig_t[hi]


@njit_cached(**NO_NRT)
def _push_work(S: np.ndarray, G: np.ndarray, work: np.ndarray, k: int) -> None:
    if S[k, INQ] == 0:
        S[k, INQ] = 1
        work[G[NWORK]] = k
        G[NWORK] += 1


@njit_cached(**NO_NRT)
def _signal(s: int, t: int, inc: int, M: tuple, S: np.ndarray, G: np.ndarray, work: np.ndarray) -> None:
    """Add a signal of ``inc`` on ``s`` taking effect at ``t``; queue the waiters whose crossing it makes known
    or earlier for re-examination. A waiter's ``WAKE`` is its known crossing (``NEVER``: none): a signal at
    or after it cannot move it, and one that leaves the total below the waited value cannot make it known."""
    off, cnt, sig_t, sig_cum, whead, hint = M[0], M[1], M[2], M[3], M[4], M[7]
    a = off[s]
    j = a + cnt[s]
    while j > a and sig_t[j - 1] > t:
        sig_t[j] = sig_t[j - 1]
        sig_cum[j] = sig_cum[j - 1] + inc
        j -= 1
    sig_t[j] = t
    sig_cum[j] = (sig_cum[j - 1] if j > a else 0) + inc
    cnt[s] += 1
    total = sig_cum[a + cnt[s] - 1]
    k = whead[s]
    while k >= 0:
        nxt = S[k, WNEXT]
        if S[k, INQ] == 0:
            wake = S[k, WAKE]
            if wake == NEVER:
                if total >= S[k, WVAL]:
                    _push_work(S, G, work, k)
            elif t < wake and _crossing(s, S[k, WVAL], off, cnt, sig_t, sig_cum, hint) < wake:
                _push_work(S, G, work, k)
        k = nxt


@njit_cached(**NO_NRT)
def _link(S: np.ndarray, whead: np.ndarray, k: int, s: int, v: int) -> None:
    S[k, WSEM] = s
    S[k, WVAL] = v
    S[k, WPREV] = -1
    S[k, WNEXT] = whead[s]
    if whead[s] >= 0:
        S[whead[s], WPREV] = k
    whead[s] = k


@njit_cached(**NO_NRT)
def _unlink(S: np.ndarray, whead: np.ndarray, k: int) -> None:
    s = S[k, WSEM]
    if s < 0:
        return
    p, n = S[k, WPREV], S[k, WNEXT]
    if p >= 0:
        S[p, WNEXT] = n
    else:
        whead[s] = n
    if n >= 0:
        S[n, WPREV] = p
    S[k, WSEM] = -1


@njit_cached(**NO_NRT)
def _signal_time(S: np.ndarray, k: int, t: int) -> int:
    """When stream ``k``'s next signals, completing at ``t``, take effect (program order); records it."""
    if t > S[k, LASTSIG]:
        S[k, LASTSIG] = t
    return S[k, LASTSIG]


@njit_cached(**NO_NRT)
def _final(s: int, c: int, me: int, now: int, S: np.ndarray, sg_ptr: np.ndarray, sg_lst: np.ndarray) -> bool:
    """No stream other than ``me`` that can signal ``s`` can do so before ``c``."""
    for x in range(sg_ptr[s], sg_ptr[s + 1]):
        m = sg_lst[x]
        if m == me or S[m, DONE] != 0:
            continue
        lb = S[m, CLOCK]
        if lb < now:
            lb = now
        lb += S[m, LATMIN]
        if S[m, LASTSIG] > lb:
            lb = S[m, LASTSIG]
        if lb < c:
            return False
    return True
