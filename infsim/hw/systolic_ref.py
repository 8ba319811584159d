"""Reference: a cycle-by-cycle simulation of the weight-stationary PE grid (small arrays only).

It moves every operand through a ``rows x cols`` grid of PEs one cycle at a time, computes the products
and derives each instruction's timing from what happened, so tests can hold the closed-form model of
:mod:`infsim.hw.systolic` to it (cycles exactly) and check the numbers against numpy.

What is simulated, per cycle:

* **Sequencer**: instructions issue in order. The LoadStationary (LS) of instruction ``i`` may start
  once the MultiplyMoving (MM) of ``i-1`` has started (instruction 0: at cycle 0) and runs on the
  stationary port; the MM of ``i`` starts on the first cycle the moving port is free and ``i``'s LS
  (if any) has finished, and then holds the moving port for
  ``max(ceil(N/rate), min_moving_cycles) + issue_overhead_cycles`` cycles.
* **LS wave**: beat ``b`` (stationary columns ``[b*s, (b+1)*s)``, ``s = stationary_load_speedup``, all
  partitions at once) enters row ``k`` at the left edge ``k`` cycles after it is issued and moves one
  column per cycle; when it reaches column ``m`` it writes the PE's *shadow* weight (rows ``>= K`` get
  0). Writing a shadow register whose previous content has not been switched in yet is a hazard and
  raises ``AssertionError``.
* **Moving wave**: moving column ``j`` of an MM enters row ``k`` at cycle ``start + floor(j/rate) + k``
  (the row skew; rows ``>= K`` carry zeros) and moves one column right per cycle; up to ``ceil(rate)``
  columns travel side by side (lanes). The first column of an MM with a new stationary carries the
  *switch* flag: each PE copies shadow -> active weight when it sees it (before that cycle's LS write).
  Each packet is tagged with its instruction and the PE asserts its active weight belongs to it.
* **Partial sums** flow down one row per cycle (``psum[k] = psum[k-1] + w[k, m] * x``) and leave the
  bottom row; after ``pipeline_latency_cycles`` more cycles they are written to the output (PSUM); the
  instruction is complete at the end of the cycle its last element lands.

Left out: SBUF/PSUM bandwidth, accumulation into existing PSUM contents (each instruction's output is
kept separately), data types (values are float64; ``rate`` only changes the timing), row/column
tiling modes. ``rate`` may be any positive number whose column injection pattern is integral (tests use
0.25, 0.5, 1 and 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from infsim.config.schema import TensorEngineConfig
from infsim.hw.systolic import beats, first_cycle_of

__all__ = ["MatmulOp", "RefResult", "simulate"]


@dataclass
class MatmulOp:
    """One ``matmul(stationary[K, M], moving[K, N])`` at ``rate`` MACs/PE/cycle.

    ``stationary=None`` reuses the stationary of the previous op (``new_stationary=False``).
    """

    moving: np.ndarray
    stationary: np.ndarray | None
    rate: float = 1.0


@dataclass
class RefResult:
    """Outputs (``stationary.T @ moving`` per op) and timing derived from the simulation."""

    outputs: list[np.ndarray]
    busy_cycles: np.ndarray
    latency_cycles: np.ndarray
    mm_start: np.ndarray
    ls_start: np.ndarray
    complete: np.ndarray
    cycles_simulated: int
    macs: int = 0


def simulate(te: TensorEngineConfig, ops: list[MatmulOp], max_cycles: int = 1_000_000) -> RefResult:
    """Run ``ops`` back to back on a fresh engine, cycle by cycle; see the module docstring."""
    R, C = te.rows, te.cols
    s_speed = float(te.stationary_load_speedup)
    n_ops = len(ops)
    if n_ops == 0:
        raise ValueError("no ops")
    if ops[0].stationary is None:
        raise ValueError("the first op needs a stationary (nothing is loaded yet)")

    # Resolve each op's stationary (the reused one for stationary=None) and shapes.
    stats: list[np.ndarray] = []
    new: list[bool] = []
    for op in ops:
        if op.stationary is None:
            stats.append(stats[-1])
            new.append(False)
        else:
            stats.append(np.asarray(op.stationary, dtype=np.float64))
            new.append(True)
    shapes: list[tuple[int, int, int]] = []
    for op, stat_w in zip(ops, stats):
        mv = np.asarray(op.moving, dtype=np.float64)
        K, M = stat_w.shape
        K2, N = mv.shape
        assert K == K2 and 1 <= K <= R and 1 <= M <= C and 1 <= N <= te.moving_free_max
        shapes.append((K, M, N))
    lanes = max(max(1, math.ceil(op.rate)) for op in ops)

    # Stationary id per op (index of the op whose LS loaded it).
    stat_id = np.zeros(n_ops, dtype=np.int64)
    for i in range(n_ops):
        stat_id[i] = i if new[i] else stat_id[i - 1]

    # ---- PE state ------------------------------------------------------------------------------
    active_w = np.zeros((R, C))
    active_id = np.full((R, C), -1, dtype=np.int64)
    shadow_w = np.zeros((R, C))
    shadow_id = np.full((R, C), -1, dtype=np.int64)
    shadow_pending = np.zeros((R, C), dtype=bool)     # written, not yet switched in
    # moving packets per PE and lane: value, op index, column, switch flag
    mv_val = np.zeros((R, C, lanes))
    mv_op = np.full((R, C, lanes), -1, dtype=np.int64)
    mv_col = np.full((R, C, lanes), -1, dtype=np.int64)
    mv_sw = np.zeros((R, C, lanes), dtype=bool)
    # partial sums leaving each PE (downwards) with their tags
    ps_val = np.zeros((R, C, lanes))
    ps_op = np.full((R, C, lanes), -1, dtype=np.int64)
    ps_col = np.full((R, C, lanes), -1, dtype=np.int64)

    outputs = [np.zeros((shapes[i][1], shapes[i][2])) for i in range(n_ops)]
    remaining = [shapes[i][1] * shapes[i][2] for i in range(n_ops)]
    complete = np.full(n_ops, -1, dtype=np.int64)
    landing: dict[int, list[tuple[int, int, int, float]]] = {}   # cycle -> [(op, m, j, value)]

    # ---- sequencer state -------------------------------------------------------------------------
    ls_start = np.full(n_ops, -1, dtype=np.int64)
    ls_done = np.full(n_ops, -1, dtype=np.int64)      # first cycle the LS is finished
    mm_start = np.full(n_ops, -1, dtype=np.int64)
    port_free = np.zeros(n_ops + 1, dtype=np.int64)   # port_free[i]: cycle the moving port is free for i
    next_ls = 0          # next op whose LS (if any) may issue
    next_mm = 0          # next op whose MM may issue
    moving_free_at = 0
    ls_port_free_at = 0
    # injection schedule of active MMs: list of (op, start)
    active_mms: list[tuple[int, int]] = []
    active_lss: list[tuple[int, int]] = []
    rows_idx = np.arange(R)
    col_idx = np.arange(C)
    m_of_op = np.array([sh[1] for sh in shapes], dtype=np.int64)

    t = 0
    while True:
        # -- sequencer: issue LS --------------------------------------------------------------------
        while next_ls < n_ops and (next_ls == 0 or mm_start[next_ls - 1] >= 0):
            i = next_ls
            if not new[i]:
                ls_done[i] = mm_start[i - 1] if i > 0 else 0
                next_ls += 1
                continue
            earliest = 0 if i == 0 else int(mm_start[i - 1])
            if t >= max(earliest, ls_port_free_at):
                ls_start[i] = t
                n_beats = beats(shapes[i][1], s_speed)
                ls_port_free_at = t + n_beats
                ls_done[i] = t + n_beats
                active_lss.append((i, t))
                next_ls += 1
            else:
                break
        # -- sequencer: issue MM ----------------------------------------------------------------------
        if next_mm < n_ops:
            i = next_mm
            if t >= moving_free_at and ls_done[i] >= 0 and t >= ls_done[i]:
                mm_start[i] = t
                port_free[i] = moving_free_at if i > 0 else 0
                occ = max(beats(shapes[i][2], ops[i].rate), te.min_moving_cycles) + te.issue_overhead_cycles
                moving_free_at = t + occ
                port_free[i + 1] = moving_free_at
                active_mms.append((i, t))
                next_mm += 1
                # the LS of the next op may issue in this same cycle
                continue

        # -- datapath: moving packets shift right, inject at the left edge ---------------------------
        mv_val[:, 1:] = mv_val[:, :-1].copy()
        mv_op[:, 1:] = mv_op[:, :-1].copy()
        mv_col[:, 1:] = mv_col[:, :-1].copy()
        mv_sw[:, 1:] = mv_sw[:, :-1].copy()
        mv_op[:, 0] = -1
        mv_col[:, 0] = -1
        mv_sw[:, 0] = False
        mv_val[:, 0] = 0.0
        for (i, st) in active_mms:
            K, M, N = shapes[i]
            mv = np.asarray(ops[i].moving, dtype=np.float64)
            for k in range(R):
                rel = t - st - k      # cycles since this op's stream reached row k's entry
                if rel < 0:
                    continue
                j0 = first_col_at(rel, ops[i].rate)
                lane = 0
                j = j0
                while j < N and first_cycle_of(j, ops[i].rate) == rel:
                    mv_val[k, 0, lane] = mv[k, j] if k < K else 0.0
                    mv_op[k, 0, lane] = i
                    mv_col[k, 0, lane] = j
                    mv_sw[k, 0, lane] = new[i] and j == 0
                    lane += 1
                    j += 1
        active_mms = [(i, st) for (i, st) in active_mms
                      if t - st - (R - 1) <= first_cycle_of(shapes[i][2] - 1, ops[i].rate)]

        # -- switch shadow -> active where a switch packet arrives -----------------------------------
        sw = mv_sw[:, :, 0] & (mv_op[:, :, 0] >= 0)
        sw &= col_idx[None, :] < m_of_op[np.maximum(mv_op[:, :, 0], 0)]
        if sw.any():
            assert shadow_pending[sw].all(), f"cycle {t}: switch without a loaded shadow"
            active_w[sw] = shadow_w[sw]
            active_id[sw] = shadow_id[sw]
            shadow_pending[sw] = False

        # -- LS wave: write shadow registers ------------------------------------------------------------
        # A beat carries several stationary columns; each travels with its beat: the element for
        # column m enters row k at st + floor(m/s) + k and is written when it reaches column m
        # (entry + m cycles).
        for (i, st) in active_lss:
            K, M, _ = shapes[i]
            stat = stats[i]
            m_idx = np.arange(M)
            beat = np.floor(m_idx / s_speed + 1e-9).astype(np.int64)
            # PEs written this cycle: entry time + m == t
            for k in range(R):
                hit = st + beat + k + m_idx == t
                if hit.any():
                    cols = m_idx[hit]
                    assert not shadow_pending[k, cols].any(), \
                        f"cycle {t}: LS of op {i} overwrites a shadow weight not yet switched in"
                    shadow_w[k, cols] = stat[k, cols] if k < K else 0.0
                    shadow_id[k, cols] = i
                    shadow_pending[k, cols] = True
        active_lss = [(i, st) for (i, st) in active_lss
                      if t <= st + beats(shapes[i][1], s_speed) - 1 + (R - 1) + shapes[i][1] - 1]

        # -- MAC and partial sums moving down ------------------------------------------------------------
        valid = mv_op >= 0
        if valid.any():
            new_ps_val = np.zeros_like(ps_val)
            new_ps_op = np.full_like(ps_op, -1)
            new_ps_col = np.full_like(ps_col, -1)
            for lane in range(lanes):
                v = valid[:, :, lane]
                if not v.any():
                    continue
                op_here = np.where(v, mv_op[:, :, lane], 0)
                used = v & (col_idx[None, :] < m_of_op[op_here])    # columns >= M are discarded
                assert np.all(active_id[used] == stat_id[op_here][used]), f"cycle {t}: PE uses the wrong stationary"
                above_val = np.zeros((R, C))
                above_val[1:] = ps_val[:-1, :, lane]
                above_op = np.full((R, C), -1, dtype=np.int64)
                above_op[1:] = ps_op[:-1, :, lane]
                above_col = np.full((R, C), -1, dtype=np.int64)
                above_col[1:] = ps_col[:-1, :, lane]
                inner = v & (rows_idx[:, None] > 0)
                assert np.all(above_op[inner] == mv_op[:, :, lane][inner]) and \
                    np.all(above_col[inner] == mv_col[:, :, lane][inner]), f"cycle {t}: psum out of step"
                new_ps_val[:, :, lane] = np.where(v, above_val + active_w * mv_val[:, :, lane], 0.0)
                new_ps_op[:, :, lane] = np.where(v, mv_op[:, :, lane], -1)
                new_ps_col[:, :, lane] = np.where(v, mv_col[:, :, lane], -1)
            ps_val, ps_op, ps_col = new_ps_val, new_ps_op, new_ps_col
            # bottom row leaves the array; lands in PSUM after the pipeline latency
            for lane in range(lanes):
                for m in range(C):
                    i = int(ps_op[R - 1, m, lane])
                    if i >= 0 and m < shapes[i][1]:
                        land = t + te.pipeline_latency_cycles
                        landing.setdefault(land, []).append((i, m, int(ps_col[R - 1, m, lane]),
                                                             float(ps_val[R - 1, m, lane])))
        else:
            ps_op[:] = -1
            ps_col[:] = -1
            ps_val[:] = 0.0

        for (i, m, j, val) in landing.pop(t, []):
            outputs[i][m, j] = val
            remaining[i] -= 1
            if remaining[i] == 0:
                complete[i] = t + 1

        t += 1
        if (complete >= 0).all():
            break
        if t > max_cycles:
            raise RuntimeError("reference simulation did not finish")

    busy = port_free[1:] - port_free[:-1]
    latency = complete - port_free[:-1]
    macs = sum(K * M * N for (K, M, N) in shapes)
    return RefResult(outputs, busy.astype(np.int64), latency.astype(np.int64), mm_start, ls_start, complete,
                     t, macs)


def first_col_at(rel: int, rate: float) -> int:
    """Smallest moving column index whose injection offset is ``>= rel``."""
    j = max(0, int(math.floor(rel * rate)) - 1)
    while first_cycle_of(j, rate) < rel:
        j += 1
    return j
