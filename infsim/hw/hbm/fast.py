"""Fast HBM channel controller: the protocol of :mod:`.ref` compiled with numba over request arrays.

It must produce exactly the reference command log and completion cycles (tests hold it to that on random
traces). Structure mirrors :func:`infsim.hw.hbm.ref.simulate_channel` step by step; queues are index
arrays kept in age order and the log grows by doubling. Two equivalent reformulations make it fast:

- earliest-issue times are kept per bank, per bank group and per channel (a command to bank ``b`` in
  group ``g`` is legal at ``max(bank[b], group[g], channel)``), which equals the reference's per-bank
  updates because the presets satisfy tRC >= tRRD_L >= tRRD_S, tCCD_L >= tCCD_S, tWTR_L >= tWTR_S;
- a cycle in which no command issues records the earliest cycle at which any blocked candidate (or an
  arrival, or a refresh due time) becomes possible, and time jumps there: no command could have issued
  in the skipped cycles, so the log is unchanged. (A row candidate that yields its bank to the other
  queue adds no wake time: the yield can only end when a queue changes, i.e. on a command or an arrival.)
- the row-bus yield test (does the other queue need another row of this bank nearer its head?) uses, per
  bank, the position of the other queue's first request, its row, and the position of its first request
  to any other row, built once per cycle when first needed.
"""

from __future__ import annotations

import numpy as np

from infsim.jit import njit_cached

from .protocol import (
    P_CLOSED,
    P_NBA,
    P_NBG,
    P_POSTPONE,
    P_RQ,
    P_TBL,
    P_TCCD_L,
    P_TCCD_S,
    P_TCL,
    P_TCWL,
    P_TFAW,
    P_TRAS,
    P_TRC,
    P_TRCDRD,
    P_TRCDWR,
    P_TREFI,
    P_TRFC,
    P_TRP,
    P_TRRD_L,
    P_TRRD_S,
    P_TRTP,
    P_TRTW,
    P_TWR,
    P_TWTR_L,
    P_TWTR_S,
    P_WHI,
    P_WLO,
    P_WQ,
)

# numba treats module-level ints as compile-time constants
_ACT, _PRE, _PREA, _RD, _WR, _REF = 0, 1, 2, 3, 4, 5


@njit_cached()
def _emit(log, k, c, cmd, g, b, r, cl):
    if k >= log.shape[0]:
        new = np.empty((log.shape[0] * 2, 6), dtype=np.int64)
        new[: log.shape[0]] = log
        log = new
    log[k, 0] = c
    log[k, 1] = cmd
    log[k, 2] = g
    log[k, 3] = b
    log[k, 4] = r
    log[k, 5] = cl
    return log, k + 1


@njit_cached()
def simulate_channel_fast(p, arrive, bg, ba, row, col, is_write, ref_offset, want_log):
    """Returns (admit, complete, log[:k], open_cycles, counts); ``counts[cmd]`` counts each command code;
    the log (cycle, cmd, bankgroup, bank, row, col) is empty unless ``want_log``."""
    n = arrive.shape[0]
    nba = p[P_NBA]
    nbg = p[P_NBG]
    nbanks = nbg * nba
    tbl = p[P_TBL]
    ccd_s = max(p[P_TCCD_S], tbl)
    ccd_l = max(p[P_TCCD_L], tbl)
    t_cl, t_cwl, t_rcdrd, t_rcdwr = p[P_TCL], p[P_TCWL], p[P_TRCDRD], p[P_TRCDWR]
    t_rp, t_ras, t_rc, t_rrds, t_rrdl, t_faw = p[P_TRP], p[P_TRAS], p[P_TRC], p[P_TRRD_S], p[P_TRRD_L], p[P_TFAW]
    t_wr, t_wtrs, t_wtrl, t_rtp, t_rtw = p[P_TWR], p[P_TWTR_S], p[P_TWTR_L], p[P_TRTP], p[P_TRTW]
    t_rfc, t_refi = p[P_TRFC], p[P_TREFI]
    rq_cap, wq_cap, whi, wlo = p[P_RQ], p[P_WQ], p[P_WHI], p[P_WLO]
    closed, postpone = p[P_CLOSED], p[P_POSTPONE]
    never = np.int64(1) << 62

    open_row = np.full(nbanks, -1, dtype=np.int64)
    act_b = np.zeros(nbanks, dtype=np.int64)
    pre_b = np.zeros(nbanks, dtype=np.int64)
    rd_b = np.zeros(nbanks, dtype=np.int64)
    wr_b = np.zeros(nbanks, dtype=np.int64)
    act_g = np.zeros(nbg, dtype=np.int64)
    rd_g = np.zeros(nbg, dtype=np.int64)
    wr_g = np.zeros(nbg, dtype=np.int64)
    act_c = np.int64(0)
    rd_c = np.int64(0)
    wr_c = np.int64(0)
    hit = np.zeros(nbanks, dtype=np.bool_)
    # per bank, over the non-served queue: position of its first request, that request's row, and the
    # position of its first request to any other row (``never`` if none)
    oth_j = np.zeros(nbanks, dtype=np.int64)
    oth_row = np.zeros(nbanks, dtype=np.int64)
    oth_j2 = np.zeros(nbanks, dtype=np.int64)
    bank_of = np.empty(n, dtype=np.int64)
    for i in range(n):
        bank_of[i] = bg[i] * nba + ba[i]
    faw = np.zeros(4, dtype=np.int64)
    n_faw = 0
    next_ref = np.int64(0)
    cap = 16 if not want_log else 3 * n + 64
    log = np.empty((cap, 6), dtype=np.int64)
    k = 0
    counts = np.zeros(6, dtype=np.int64)
    admit = np.full(n, -1, dtype=np.int64)
    complete = np.full(n, -1, dtype=np.int64)
    rq = np.empty((rq_cap, 3), dtype=np.int64)  # entries: request, bank, row (oldest first)
    wq = np.empty((wq_cap, 3), dtype=np.int64)
    nr = 0
    nw = 0
    nxt = 0
    done = 0
    owed = 0
    next_due = ref_offset + t_refi
    refreshing = False
    drain = False
    open_cycles = np.int64(0)
    n_open = 0
    c = np.int64(0)

    stall_limit = 4 * postpone * t_refi + 16 * t_rc + 1000
    last_progress = np.int64(0)
    while done < n:
        # guard: with queued work a column command issues at least every refresh batch plus a few tRC
        if nr + nw == 0:
            last_progress = c
        elif c - last_progress > stall_limit:
            raise RuntimeError("HBM controller made no progress (livelock); check tREFI against tRFC")
        issued = False
        wake = never
        # 1. admission
        while nxt < n and arrive[nxt] <= c:
            if is_write[nxt]:
                if nw >= wq_cap:
                    break
                wq[nw, 0] = nxt
                wq[nw, 1] = bank_of[nxt]
                wq[nw, 2] = row[nxt]
                nw += 1
            else:
                if nr >= rq_cap:
                    break
                rq[nr, 0] = nxt
                rq[nr, 1] = bank_of[nxt]
                rq[nr, 2] = row[nxt]
                nr += 1
            admit[nxt] = c
            nxt += 1
        if nxt < n and arrive[nxt] > c:
            wake = arrive[nxt]
        # 2. refresh bookkeeping
        while c >= next_due:
            owed += 1
            next_due += t_refi
        wake = min(wake, next_due)
        if (not refreshing) and owed > 0 and (owed >= postpone or (nr == 0 and nw == 0)):
            refreshing = True
        # 3. write drain
        if drain and nw <= wlo:
            drain = False
        elif (not drain) and nw >= whi:
            drain = True
        if refreshing:
            # 4. refresh mode
            if n_open > 0:
                t_ok = np.int64(0)
                for b in range(nbanks):
                    if open_row[b] >= 0 and pre_b[b] > t_ok:
                        t_ok = pre_b[b]
                if c >= t_ok:
                    counts[_PREA] += 1
                    if want_log:
                        log, k = _emit(log, k, c, _PREA, -1, -1, -1, -1)
                    for b in range(nbanks):
                        if open_row[b] >= 0:
                            open_row[b] = -1
                            act_b[b] = max(act_b[b], c + t_rp)
                    n_open = 0
                    next_ref = max(next_ref, c + t_rp)
                    issued = True
                else:
                    wake = min(wake, t_ok)
            elif c >= next_ref:
                counts[_REF] += 1
                if want_log:
                    log, k = _emit(log, k, c, _REF, -1, -1, -1, -1)
                act_c = max(act_c, c + t_rfc)
                next_ref = c + t_rfc
                owed -= 1
                if owed == 0:
                    refreshing = False
                issued = True
            else:
                wake = min(wake, next_ref)
        else:
            writes = drain or (nr == 0 and nw > 0)
            if writes:
                q = wq
                nq = nw
                oq = rq
                no = nr
            else:
                q = rq
                nq = nr
                oq = wq
                no = nw
            # 5. column command
            for i in range(nq):
                b = q[i, 1]
                if open_row[b] != q[i, 2]:
                    continue
                r = q[i, 0]
                g = b // nba
                if writes:
                    t_ok = max(wr_b[b], max(wr_g[g], wr_c))
                else:
                    t_ok = max(rd_b[b], max(rd_g[g], rd_c))
                if c < t_ok:
                    if t_ok < wake:
                        wake = t_ok
                    continue
                if writes:
                    wr_g[g] = max(wr_g[g], c + ccd_l)
                    wr_c = max(wr_c, c + ccd_s)
                    rd_g[g] = max(rd_g[g], c + t_cwl + tbl + t_wtrl)
                    rd_c = max(rd_c, c + t_cwl + tbl + t_wtrs)
                    pre_b[b] = max(pre_b[b], c + t_cwl + tbl + t_wr)
                    complete[r] = c + t_cwl + tbl
                    counts[_WR] += 1
                    if want_log:
                        log, k = _emit(log, k, c, _WR, g, b % nba, row[r], col[r])
                else:
                    rd_g[g] = max(rd_g[g], c + ccd_l)
                    rd_c = max(rd_c, c + ccd_s)
                    wr_c = max(wr_c, c + t_rtw)
                    pre_b[b] = max(pre_b[b], c + t_rtp)
                    complete[r] = c + t_cl + tbl
                    counts[_RD] += 1
                    if want_log:
                        log, k = _emit(log, k, c, _RD, g, b % nba, row[r], col[r])
                for j in range(i, nq - 1):
                    q[j, 0] = q[j + 1, 0]
                    q[j, 1] = q[j + 1, 1]
                    q[j, 2] = q[j + 1, 2]
                nq -= 1
                if writes:
                    nw = nq
                else:
                    nr = nq
                done += 1
                issued = True
                last_progress = c
                break
            # 6. row command
            row_busy = False
            hit_ready = False
            oth_ready = False
            for i in range(nq):
                b = q[i, 1]
                rowv = q[i, 2]
                ob = open_row[b]
                if ob == rowv:
                    continue
                if i > 0 and no > 0:
                    # yield the bank if the other queue needs another row of it nearer its head
                    if not oth_ready:
                        for bb in range(nbanks):
                            oth_j[bb] = never
                            oth_j2[bb] = never
                        for jj in range(no):
                            bb = oq[jj, 1]
                            if oth_j[bb] == never:
                                oth_j[bb] = jj
                                oth_row[bb] = oq[jj, 2]
                            elif oth_j2[bb] == never and oq[jj, 2] != oth_row[bb]:
                                oth_j2[bb] = jj
                        oth_ready = True
                    if (oth_j[b] < i and oth_row[b] != rowv) or oth_j2[b] < i:
                        continue
                if ob < 0:
                    g = b // nba
                    t_ok = max(act_b[b], max(act_g[g], act_c))
                    if n_faw == 4:
                        t_ok = max(t_ok, faw[0] + t_faw)
                    if c >= t_ok:
                        act_b[b] = max(act_b[b], c + t_rc)
                        act_g[g] = max(act_g[g], c + t_rrdl)
                        act_c = max(act_c, c + t_rrds)
                        rd_b[b] = max(rd_b[b], c + t_rcdrd)
                        wr_b[b] = max(wr_b[b], c + t_rcdwr)
                        pre_b[b] = max(pre_b[b], c + t_ras)
                        open_row[b] = rowv
                        n_open += 1
                        if n_faw < 4:
                            faw[n_faw] = c
                            n_faw += 1
                        else:
                            faw[0] = faw[1]
                            faw[1] = faw[2]
                            faw[2] = faw[3]
                            faw[3] = c
                        counts[_ACT] += 1
                        if want_log:
                            log, k = _emit(log, k, c, _ACT, g, b % nba, rowv, -1)
                        row_busy = True
                        issued = True
                        break
                    elif t_ok < wake:
                        wake = t_ok
                else:
                    if not hit_ready:
                        for bb in range(nbanks):
                            hit[bb] = False
                        for jj in range(nq):
                            if open_row[q[jj, 1]] == q[jj, 2]:
                                hit[q[jj, 1]] = True
                        hit_ready = True
                    if hit[b]:
                        continue
                    if c >= pre_b[b]:
                        counts[_PRE] += 1
                        if want_log:
                            log, k = _emit(log, k, c, _PRE, b // nba, b % nba, ob, -1)
                        open_row[b] = -1
                        n_open -= 1
                        act_b[b] = max(act_b[b], c + t_rp)
                        next_ref = max(next_ref, c + t_rp)
                        row_busy = True
                        issued = True
                        break
                    elif pre_b[b] < wake:
                        wake = pre_b[b]
            # 7. closed page
            if closed != 0 and not row_busy:
                for b in range(nbanks):
                    if open_row[b] < 0:
                        continue
                    wanted = False
                    for i in range(nr):
                        if rq[i, 1] == b and rq[i, 2] == open_row[b]:
                            wanted = True
                            break
                    if not wanted:
                        for i in range(nw):
                            if wq[i, 1] == b and wq[i, 2] == open_row[b]:
                                wanted = True
                                break
                    if wanted:
                        continue
                    if c < pre_b[b]:
                        if pre_b[b] < wake:
                            wake = pre_b[b]
                        continue
                    counts[_PRE] += 1
                    if want_log:
                        log, k = _emit(log, k, c, _PRE, b // nba, b % nba, open_row[b], -1)
                    open_row[b] = -1
                    n_open -= 1
                    act_b[b] = max(act_b[b], c + t_rp)
                    next_ref = max(next_ref, c + t_rp)
                    issued = True
                    break
        # 8. advance time: one cycle after a command, else to the earliest cycle anything can happen
        step = np.int64(1)
        if not issued and wake > c + 1 and wake < never:
            step = wake - c
        if n_open > 0:
            open_cycles += step
        c += step
    return admit, complete, log[:k], open_cycles, counts
