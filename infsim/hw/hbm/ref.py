"""Reference HBM channel controller in plain Python: the definition of the protocol.

Slow and readable; :mod:`.fast` must produce exactly the same command log and completion cycles.

What one channel controller does (all channels are independent: each has its own banks, data bus and
separate row and column command buses, so they are simulated one at a time):

Requests
    Each request is one burst (``access_bytes``) with an arrival cycle, bank group, bank, row, column and
    direction. Requests wait, in arrival order, in an unbounded per-channel arrival FIFO and are admitted
    in that order into the read queue or the write queue while the target queue has room (the head blocks
    when its queue is full). Latency is counted from admission (as DRAMsim3 does) and from arrival.

Every cycle ``c``, in this order
    1. Admission (above).
    2. Refresh bookkeeping: a REF becomes owed every tREFI (channels are staggered across one tREFI).
       Owed REFs are postponed while there is traffic, up to ``refresh_postpone_max``; when that many are
       owed, or when both queues are empty, the channel enters *refresh mode*.
    3. Write drain: starts when the write queue reaches the high watermark, stops at the low watermark.
       Writes are served in drain mode or when the read queue is empty; otherwise reads.
    4. Refresh mode: no ACT and no column commands. The row bus issues PREA once every open bank may be
       precharged, then REF once tRP (after PREA) and tRFC (after the previous REF) have passed; one REF
       per owed interval, back to back; refresh mode ends when none is owed.
    5. Otherwise, column bus (FR-FCFS, first ready): the oldest request of the served queue whose bank has
       its row open and whose RD/WR is legal this cycle is issued and leaves the queue.
    6. Row bus (FCFS among not-ready requests), at most one command: walking the served queue oldest
       first, the first request whose bank is closed gets an ACT if legal (tRC, tRRD_S/L, tFAW, tRP,
       tRFC); or whose bank holds another row that no request of the served queue still hits gets a PRE
       if legal (tRAS, tRTP, write recovery). A request skips both while the *other* queue holds a
       request to a different row of the same bank nearer its head (at a smaller queue position): the
       bank is left to the direction that needs it sooner. Without this rule a deep read queue lets its
       youngest reads open (or close) the bank the write drain is working in, and an aliased copy
       (source and destination in the same bank) pays a row conflict at every direction switch. The
       served queue's oldest request never yields, so the served queue always progresses.
    7. Closed-page policy only, if the row bus is still free: the lowest-numbered open bank whose open
       row no queued request (read or write) targets is precharged if legal.
    8. Time (starting at cycle 0) advances one cycle; when no command issued this cycle, both queues are
       empty, no REF is owed or in progress and (closed page) no bank is open, it jumps to the next
       arrival or refresh due time.

Timing rules applied when a command issues at cycle ``c`` (``tBL`` = burst_cycles)
    ACT b:  ACT b >= c+tRC; ACT same-BG others >= c+tRRD_L; ACT other BG >= c+tRRD_S; RD b >= c+tRCDRD;
            WR b >= c+tRCDWR; PRE b >= c+tRAS; at most four ACTs in any tFAW window.
    PRE b:  ACT b >= c+tRP; REF >= c+tRP. PREA = PRE of every open bank.
    RD b:   RD same BG >= c+max(tCCD_L,tBL); RD other BG >= c+max(tCCD_S,tBL); WR any >= c+tRTW;
            PRE b >= c+tRTP. Data occupies [c+tCL, c+tCL+tBL); the request completes at c+tCL+tBL.
    WR b:   WR same BG >= c+max(tCCD_L,tBL); WR other BG >= c+max(tCCD_S,tBL);
            RD same BG >= c+tCWL+tBL+tWTR_L; RD other BG >= c+tCWL+tBL+tWTR_S; PRE b >= c+tCWL+tBL+tWR.
            The request completes at c+tCWL+tBL.
    REF:    ACT any >= c+tRFC; REF >= c+tRFC.

Left out: read-after-write forwarding from the write queue, per-bank refresh, power-down, auto-precharge
commands (closed page uses explicit PRE), the ACT occupying two row-bus cycles, cross-channel arrival
coupling (no head-of-line blocking between channels), ECC and data-bus inversion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .protocol import (
    ACT,
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
    PRE,
    PREA,
    RD,
    REF,
    WR,
)


@dataclass
class Bank:
    """State of one bank: open row (or None) and the earliest cycle of each command to it."""

    open_row: int | None = None
    next_act: int = 0
    next_pre: int = 0
    next_rd: int = 0
    next_wr: int = 0


@dataclass
class ChannelResult:
    """Per-request cycles and the command log of one channel."""

    admit: np.ndarray
    complete: np.ndarray
    log: np.ndarray  # (n, 6): cycle, cmd, bankgroup, bank, row, col (channel added by the caller)
    open_cycles: int  # cycles with at least one bank open (active standby)
    end_cycle: int
    counts: dict[str, int] = field(default_factory=dict)


def simulate_channel(p: np.ndarray, arrive: np.ndarray, bg: np.ndarray, ba: np.ndarray, row: np.ndarray,
                     col: np.ndarray, is_write: np.ndarray, ref_offset: int = 0) -> ChannelResult:
    """Run one channel controller over requests sorted by arrival cycle (see the module docstring)."""
    n = len(arrive)
    nbg, nba = int(p[P_NBG]), int(p[P_NBA])
    nbanks = nbg * nba
    tbl = int(p[P_TBL])
    ccd_s, ccd_l = max(int(p[P_TCCD_S]), tbl), max(int(p[P_TCCD_L]), tbl)
    banks = [Bank() for _ in range(nbanks)]
    bank_of = [int(bg[i]) * nba + int(ba[i]) for i in range(n)]
    faw: list[int] = []  # cycles of recent ACTs
    next_ref = 0
    log: list[tuple[int, int, int, int, int, int]] = []
    admit = np.full(n, -1, dtype=np.int64)
    complete = np.full(n, -1, dtype=np.int64)
    rq: list[int] = []
    wq: list[int] = []
    nxt = 0
    done = 0
    owed = 0
    next_due = ref_offset + int(p[P_TREFI])
    refreshing = False
    drain = False
    open_cycles = 0
    c = 0

    def emit(cmd: int, b: int, r: int, cl: int) -> None:
        log.append((c, cmd, b // nba if b >= 0 else -1, b % nba if b >= 0 else -1, r, cl))

    def precharge(b: int) -> None:
        bk = banks[b]
        bk.open_row = None
        bk.next_act = max(bk.next_act, c + int(p[P_TRP]))

    def act_legal(b: int) -> bool:
        if c < banks[b].next_act:
            return False
        return len(faw) < 4 or c - faw[-4] >= int(p[P_TFAW])

    while done < n:
        n_log = len(log)
        # 1. admission in arrival order
        while nxt < n and arrive[nxt] <= c:
            q, cap = (wq, int(p[P_WQ])) if is_write[nxt] else (rq, int(p[P_RQ]))
            if len(q) >= cap:
                break
            q.append(nxt)
            admit[nxt] = c
            nxt += 1
        # 2. refresh bookkeeping
        while c >= next_due:
            owed += 1
            next_due += int(p[P_TREFI])
        if not refreshing and owed > 0 and (owed >= int(p[P_POSTPONE]) or (not rq and not wq)):
            refreshing = True
        # 3. write drain
        if drain and len(wq) <= int(p[P_WLO]):
            drain = False
        elif not drain and len(wq) >= int(p[P_WHI]):
            drain = True
        row_busy = False
        if refreshing:
            # 4. refresh mode: PREA, then the owed REFs
            open_banks = [b for b in range(nbanks) if banks[b].open_row is not None]
            if open_banks:
                if all(c >= banks[b].next_pre for b in open_banks):
                    emit(PREA, -1, -1, -1)
                    for b in open_banks:
                        precharge(b)
                    next_ref = max(next_ref, c + int(p[P_TRP]))
            elif c >= next_ref:
                emit(REF, -1, -1, -1)
                for bk in banks:
                    bk.next_act = max(bk.next_act, c + int(p[P_TRFC]))
                next_ref = c + int(p[P_TRFC])
                owed -= 1
                if owed == 0:
                    refreshing = False
        else:
            writes = drain or (not rq and bool(wq))
            q = wq if writes else rq
            # 5. column command: oldest ready row hit
            for i, r in enumerate(q):
                b = bank_of[r]
                bk = banks[b]
                if bk.open_row != int(row[r]) or c < (bk.next_wr if writes else bk.next_rd):
                    continue
                g = b // nba
                for b2, other in enumerate(banks):
                    same = b2 // nba == g
                    if writes:
                        other.next_wr = max(other.next_wr, c + (ccd_l if same else ccd_s))
                        wtr = int(p[P_TWTR_L]) if same else int(p[P_TWTR_S])
                        other.next_rd = max(other.next_rd, c + int(p[P_TCWL]) + tbl + wtr)
                    else:
                        other.next_rd = max(other.next_rd, c + (ccd_l if same else ccd_s))
                        other.next_wr = max(other.next_wr, c + int(p[P_TRTW]))
                if writes:
                    bk.next_pre = max(bk.next_pre, c + int(p[P_TCWL]) + tbl + int(p[P_TWR]))
                    complete[r] = c + int(p[P_TCWL]) + tbl
                    emit(WR, b, int(row[r]), int(col[r]))
                else:
                    bk.next_pre = max(bk.next_pre, c + int(p[P_TRTP]))
                    complete[r] = c + int(p[P_TCL]) + tbl
                    emit(RD, b, int(row[r]), int(col[r]))
                del q[i]
                done += 1
                break
            # 6. row command: ACT for the oldest request to a closed bank, or PRE for a conflict
            other_q = rq if writes else wq
            hit = [False] * nbanks
            for r in q:
                b = bank_of[r]
                if banks[b].open_row == int(row[r]):
                    hit[b] = True
            for i, r in enumerate(q):
                b = bank_of[r]
                bk = banks[b]
                if bk.open_row != int(row[r]) and any(
                        bank_of[o] == b and int(row[o]) != int(row[r]) for o in other_q[:i]):
                    continue  # the other direction needs another row of this bank sooner
                if bk.open_row is None:
                    if act_legal(b):
                        g = b // nba
                        for b2, other in enumerate(banks):
                            if b2 == b:
                                other.next_act = max(other.next_act, c + int(p[P_TRC]))
                            elif b2 // nba == g:
                                other.next_act = max(other.next_act, c + int(p[P_TRRD_L]))
                            else:
                                other.next_act = max(other.next_act, c + int(p[P_TRRD_S]))
                        bk.next_rd = max(bk.next_rd, c + int(p[P_TRCDRD]))
                        bk.next_wr = max(bk.next_wr, c + int(p[P_TRCDWR]))
                        bk.next_pre = max(bk.next_pre, c + int(p[P_TRAS]))
                        bk.open_row = int(row[r])
                        faw.append(c)
                        if len(faw) > 4:
                            faw.pop(0)
                        emit(ACT, b, int(row[r]), -1)
                        row_busy = True
                        break
                elif bk.open_row != int(row[r]) and not hit[b]:
                    if c >= bk.next_pre:
                        emit(PRE, b, bk.open_row, -1)
                        precharge(b)
                        next_ref = max(next_ref, c + int(p[P_TRP]))
                        row_busy = True
                        break
            # 7. closed page: precharge an open bank nobody is waiting for
            if p[P_CLOSED] and not row_busy:
                wanted = set()
                for r in rq + wq:
                    wanted.add((bank_of[r], int(row[r])))
                for b, bk in enumerate(banks):
                    if bk.open_row is not None and (b, bk.open_row) not in wanted and c >= bk.next_pre:
                        emit(PRE, b, bk.open_row, -1)
                        precharge(b)
                        next_ref = max(next_ref, c + int(p[P_TRP]))
                        break
        # 8. advance time
        any_open = any(bk.open_row is not None for bk in banks)
        step = 1
        idle = not rq and not wq and not refreshing and owed == 0 and not (p[P_CLOSED] and any_open)
        if idle and len(log) == n_log and done < n:
            target = min(int(arrive[nxt]) if nxt < n else next_due, next_due)
            step = max(1, target - c)
        if any_open:
            open_cycles += step
        c += step
    out = np.array(log, dtype=np.int64).reshape(-1, 6)
    end = int(complete.max()) if n else 0
    return ChannelResult(admit=admit, complete=complete, log=out, open_cycles=open_cycles, end_cycle=end)
