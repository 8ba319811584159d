"""Tensor-engine (systolic array) timing: one Neuron ``matmul``, sequences of them, and whole GEMMs.

Two modes share this module.

**Native mode** models the NeuronCore tensor engine (TensorE) as a weight-stationary systolic array
of ``rows x cols`` PEs (all numbers come from :class:`~infsim.config.schema.TensorEngineConfig`). One
``matmul(stationary[K, M], moving[K, N])`` is modelled as

* **LoadStationary (LS)**: the stationary tile enters through the stationary input port, one beat per
  cycle, each beat carrying ``stationary_load_speedup`` columns of the free dimension ``M`` for all K
  partitions at once (the K partitions are loaded in parallel, like the moving data), so
  ``ls = ceil(M / stationary_load_speedup)`` cycles ("fast LS runs up to 4x faster than an MM of the
  same free size"). It fills a *shadow* weight buffer in every PE; LS time does not depend on the dtype
  (the port moves elements, not bytes). A matmul that reuses the loaded stationary
  (``new_stationary=False``) has no LS. (LS time follows the free size M, not K: the K partitions
  are read in parallel, one element each per beat, exactly as for the moving tile.)
* **MultiplyMoving (MM)**: moving column ``j`` enters the array at cycle ``floor(j / rate)`` after the
  MM starts (``rate`` = ``macs_per_pe_per_cycle`` of the dtype: 0.25 for fp32 = one column every 4
  cycles, 2 for int8 = two columns per cycle). The moving port is occupied for
  ``occ = max(ceil(N / rate), min_moving_cycles) + issue_overhead_cycles`` cycles (the 64-cycle
  ``MM_INIT_LATENCY`` minimum of NeuronCore-v2).
* **Fill and drain**: moving data is skewed one cycle per row and moves one column per cycle, partial
  sums move down one row per cycle and leave the bottom of the array (all ``rows`` rows, whatever K),
  then take ``pipeline_latency_cycles`` to land in PSUM. The last result of a matmul is in PSUM
  ``floor((N-1)/rate) + rows + M - 1 + pipeline_latency_cycles`` cycles after its MM started.
* **Overlap**: instructions issue in order; the LS of instruction ``i`` starts when the MM of ``i-1``
  starts (the shadow buffer is free once the previous stationary has been switched in, and the switch
  travels through the array with the first moving column, so no PE ever sees the wrong weights). The
  MM of ``i`` starts when the moving port is free and its LS has finished. Back-to-back matmuls
  therefore reach an initiation interval of ``max(ceil(N/rate), min_moving_cycles)`` whenever
  ``ls_i <= occ_{i-1}``; otherwise the LS shows as a stall.

:func:`matmul_timing` returns, for a sequence of back-to-back matmuls on one engine, ``busy_cycles[i]``
(the issue interval: from the cycle the moving port is free for ``i`` to the cycle it is free for
``i+1``, i.e. ``occ_i`` plus any wait for ``i``'s LS) and ``latency_cycles[i]`` (from that same start
until ``i``'s last result is in PSUM). ``sum(busy[:i])`` is the start of ``i`` and
``max_i(start_i + latency_i)`` the end of the sequence. :mod:`infsim.hw.systolic_ref` simulates the PE
grid cycle by cycle, computes the product and is held equal to this model by the tests.

Left out of the native model: SBUF read bandwidth and the ~60-cycle SBUF access overhead (the engine
charges those), row/column tiling modes (several small matmuls in parallel), PSUM bank conflicts,
the fp8 double-row mode of NC-v3, and any dependence of LS time on the dtype.

Native GEMM (:func:`gemm`): ``C[M, N] = A[M, K] @ B[K, N]``. ``dataflow='ws'`` keeps the weight
operand ``B`` stationary (tiles of ``<= rows`` x ``<= cols``: ``B[k-tile, n-tile]``) and streams
``A^T`` chunks of ``<= moving_free_max`` columns of M; ``'is'`` keeps ``A^T`` stationary and streams
``B`` in chunks of ``<= moving_free_max`` columns of N. Loop order: stationary free tile -> group of
moving chunks that fits in the PSUM banks (one bank per chunk; ``psum_banks=None`` = unlimited) ->
K tile (accumulated in PSUM) -> moving chunk, so each stationary is loaded once per group and reused
across its chunks. ``'os'`` (output stationary) does not exist on the Neuron tensor engine and is only
available with ``compat='scalesim'``.

**SCALE-Sim mode** (``compat='scalesim'``) reproduces exactly the "Total Cycles" column (compute
cycles, not "incl. prefetch") that SCALE-Sim 3.0.0 reports for a GEMM topology with unlimited
bandwidth (no stalls). SCALE-Sim maps the GEMM as a 1x1 convolution: ifmap ``[M, K]``, filter
``[K, N]``, ofmap ``[M, N]``, and for an ``R x C`` array folds the operands as

====  ======  ======  ======  =====================================
flow  Sr      Sc      T       cycles per fold
====  ======  ======  ======  =====================================
os    M       N       K       ``T + R + C - 2``
ws    K       N       M       ``T + 2R + C - 2``
is    K       M       N       ``T + 2R + C - 2``
====  ======  ======  ======  =====================================

with ``ceil(Sr/R) * ceil(Sc/C)`` folds run one after another, and Total Cycles = folds x cycles per
fold - 1 (SCALE-Sim reports the index of the last ofmap write cycle). Utilization is its "Overall
Util %" / 100 = ``M*N*K / (R*C*total_cycles)``.

Differences between native and SCALE-Sim modes (each is a Neuron feature SCALE-Sim does not model,
or a SCALE-Sim convention):

1. Weight load: SCALE-Sim spends ``R`` cycles per fold loading the stationary operand and never
   overlaps it with compute; native loads ``ceil(M/stationary_load_speedup)`` cycles in the
   background during the previous multiply.
2. Folds do not overlap in SCALE-Sim (each fold fills and drains: ``R + C - 2`` or ``2R + C - 2``
   extra cycles per fold); native starts the next matmul's stream as soon as the moving port is free,
   so fill/drain is paid once per sequence.
3. Native has the ``min_moving_cycles`` (64) minimum per matmul and the PSUM-limited moving chunk
   (``moving_free_max`` = 512); SCALE-Sim streams the whole T dimension in one fold.
4. Native applies the dtype rate (fp32 4x slower, int8 2x faster) and ``pipeline_latency_cycles``
   and ``issue_overhead_cycles``; SCALE-Sim has one MAC per PE per cycle and no PSUM write latency.
5. Native 'os' is unsupported (error); SCALE-Sim's 'ws'/'is' use SCALE-Sim's operand roles (ws: the
   K x N filter is stationary, is: the M x K ifmap is stationary), and native uses the same roles.
6. Off-by-one: SCALE-Sim's Total Cycles is the last cycle index (count - 1); native counts cycles.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from infsim.config.schema import TensorEngineConfig, by_dtype
from infsim.errors import InfsimError
from infsim.jit import NO_NRT, njit_cached

__all__ = [
    "DATAFLOWS",
    "GemmResult",
    "beats",
    "gemm",
    "matmul_cycles",
    "matmul_timing",
    "scalesim_gemm_cycles",
    "transpose_timing",
]

DATAFLOWS = ("ws", "os", "is")
_EPS = 1e-9


@njit_cached(inline="always")
def _ceil_div(n: float, r: float) -> int:
    """ceil(n / r) robust to float rounding (rates like 0.25 and 2 are exact anyway)."""
    return int(math.ceil(n / r - _EPS))


@njit_cached(inline="always")
def _floor_div(n: float, r: float) -> int:
    return int(math.floor(n / r + _EPS))


def beats(n: int, rate: float) -> int:
    """Cycles the moving port needs to inject ``n`` columns at ``rate`` columns per cycle (no minimum)."""
    return int(math.ceil(n / rate - _EPS))


def first_cycle_of(j: int, rate: float) -> int:
    """Cycle offset (from the MM start) at which moving column ``j`` enters the array."""
    return int(math.floor(j / rate + _EPS))


@njit_cached(**NO_NRT)  # allocates nothing: loads from the cache without numba's runtime
def _seq_kernel(k: np.ndarray, m: np.ndarray, n: np.ndarray, rate: np.ndarray, new: np.ndarray,
                rows: int, min_mm: int, ls_speed: float, lat: int, issue: int,
                busy: np.ndarray, latency: np.ndarray) -> None:
    free = 0          # cycle the moving port is free for the current instruction (its start)
    prev_mm = 0       # MM start of the previous instruction (when its stationary was switched in)
    for i in range(k.shape[0]):
        occ = max(_ceil_div(n[i], rate[i]), min_mm) + issue
        ls_end = prev_mm
        if new[i]:
            ls_end += _ceil_div(m[i], ls_speed)
        mm = max(free, ls_end)
        done = mm + _floor_div(n[i] - 1, rate[i]) + rows + m[i] - 1 + lat
        nxt = mm + occ
        busy[i] = nxt - free
        latency[i] = done - free
        prev_mm = mm
        free = nxt


def _as_arrays(k: Any, m: Any, n: Any, rate: Any, new_stationary: Any) -> tuple[np.ndarray, ...]:
    ka = np.ascontiguousarray(np.atleast_1d(np.asarray(k, dtype=np.int64)))
    size = ka.shape[0]

    def bc(x: Any, dt: Any) -> np.ndarray:
        a = np.asarray(x, dtype=dt)
        return np.ascontiguousarray(np.broadcast_to(a, (size,)) if a.ndim == 0 else np.atleast_1d(a))

    ma, na = bc(m, np.int64), bc(n, np.int64)
    ra, sa = bc(rate, np.float64), bc(new_stationary, np.bool_)
    for name, a in (("m", ma), ("n", na), ("rate", ra), ("new_stationary", sa)):
        if a.shape != (size,):
            raise InfsimError(f"matmul_timing: {name} has shape {a.shape}, expected ({size},)")
    return ka, ma, na, ra, sa


def _check_shapes(te: TensorEngineConfig, k: np.ndarray, m: np.ndarray, n: np.ndarray, rate: np.ndarray) -> None:
    if k.size == 0:
        return
    if k.min() < 1 or m.min() < 1 or n.min() < 1:
        raise InfsimError("matmul: K, M and N must be >= 1")
    if k.max() > te.rows:
        raise InfsimError(f"matmul: K={int(k.max())} exceeds tensor_engine.rows={te.rows}")
    if m.max() > te.cols:
        raise InfsimError(f"matmul: stationary free size M={int(m.max())} exceeds tensor_engine.cols={te.cols}")
    if n.max() > te.moving_free_max:
        raise InfsimError(f"matmul: moving free size N={int(n.max())} exceeds "
                          f"tensor_engine.moving_free_max={te.moving_free_max}")
    if not np.all(rate > 0):
        raise InfsimError("matmul: rate (MACs per PE per cycle) must be > 0")


def matmul_timing(te: TensorEngineConfig, k: np.ndarray, m: np.ndarray, n: np.ndarray, rate: np.ndarray,
                  new_stationary: np.ndarray | bool) -> tuple[np.ndarray, np.ndarray]:
    """Timing of back-to-back ``matmul(stationary[K, M], moving[K, N])`` on one tensor engine.

    ``rate[i]`` is ``te.macs_per_pe_per_cycle[dtype]``; ``new_stationary[i]`` is False when ``i`` reuses
    the stationary loaded for ``i-1``. Scalars broadcast to the length of ``k``. Returns int64 arrays
    ``(busy_cycles, latency_cycles)``: the issue interval of each instruction (LS overlap with the
    previous multiply included) and the cycles from its start (``sum(busy[:i])``) until its result is
    complete in PSUM. The sequence starts with the engine idle and the shadow weight buffer free.
    """
    ka, ma, na, ra, sa = _as_arrays(k, m, n, rate, new_stationary)
    _check_shapes(te, ka, ma, na, ra)
    busy = np.empty(ka.shape[0], dtype=np.int64)
    latency = np.empty(ka.shape[0], dtype=np.int64)
    _seq_kernel(ka, ma, na, ra, sa, te.rows, te.min_moving_cycles, float(te.stationary_load_speedup),
                te.pipeline_latency_cycles, te.issue_overhead_cycles, busy, latency)
    return busy, latency


def transpose_timing(te: TensorEngineConfig, p: np.ndarray, f: np.ndarray, rate: np.ndarray,
                     new_stationary: np.ndarray | bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Timing of TensorE transposes ``src[P, F] -> out[F, P]`` (a matmul against the identity).

    ``out = src.T @ I`` is ``matmul(stationary=src[K=P, M=F], moving=I[K=P, N=P])``: the source is loaded
    as the stationary (so ``F <= cols``) and the ``P x P`` identity streams through. Same return values
    as :func:`matmul_timing`.
    """
    pa = np.asarray(p, dtype=np.int64)
    return matmul_timing(te, pa, f, pa, rate, new_stationary)


def _rate(te: TensorEngineConfig, dtype: str) -> float:
    try:
        return by_dtype(te.macs_per_pe_per_cycle, dtype)
    except KeyError:
        have = ", ".join(sorted(te.macs_per_pe_per_cycle))
        raise InfsimError(f"tensor_engine has no rate for dtype {dtype!r} (has: {have})") from None


def matmul_cycles(te: TensorEngineConfig, k: int, m: int, n: int, dtype: str = "bf16") -> int:
    """Cycles of one isolated matmul from an idle engine until its result is in PSUM (LS + MM + drain)."""
    _, latency = matmul_timing(te, np.array([k]), np.array([m]), np.array([n]),
                               np.array([_rate(te, dtype)]), np.array([True]))
    return int(latency[0])


# ---------------------------------------------------------------------------------------------
# GEMM


@dataclass(frozen=True)
class GemmResult:
    """Cycles and utilization of one GEMM ``C[M, N] = A[M, K] @ B[K, N]`` on one tensor engine."""

    m: int
    n: int
    k: int
    rows: int
    cols: int
    dtype: str
    dataflow: str
    compat: str | None
    total_cycles: int
    total_ns: float
    utilization: float
    tiles: int                 # matmul instructions (native) or folds (SCALE-Sim)
    stationary_loads: int      # LoadStationary count (native) or folds (SCALE-Sim)
    macs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: the most cycles a GEMM may take (int64 arithmetic in the kernel, with headroom)
MAX_CYCLES = 2**62


@njit_cached()
def _k_tiles(free: int, prev_mm: int, end: int, n_k: int, first_new: bool, m_t: int, c0: int, c1: int,
             mov_total: int, chunk: int, rate: float, min_mm: int, ls_m: int, rows: int, lat: int,
             issue: int) -> tuple:
    """The ``n_k`` K tiles of one stationary column tile and one moving group: per K tile, a stationary load
    (LS; the first one only if ``first_new``) then the group's moving chunks back to back.

    The matmul recurrence depends only on times relative to ``free`` (it is invariant under a shift of
    time), and every K tile after the first is the same block. So once a block leaves the relative state
    (``prev_mm - free``, ``end - free``) and the time it took unchanged from the block before, every
    further block repeats it exactly, and the remaining ones are added in one step: the walk is O(1) in
    ``n_k`` instead of O(n_k) matmuls."""
    pa = pe = pd = 0
    have_prev = False
    kt = 0
    while kt < n_k:
        f0 = free
        new = first_new or kt > 0
        for c in range(c0, c1):
            n_c = min(chunk, mov_total - c * chunk)
            occ = max(_ceil_div(n_c, rate), min_mm) + issue
            ls_end = prev_mm + (ls_m if (c == c0 and new) else 0)
            mm = max(free, ls_end)
            done = mm + _floor_div(n_c - 1, rate) + rows + m_t - 1 + lat
            if done > end:
                end = done
            prev_mm = mm
            free = mm + occ
        kt += 1
        a, e, d = prev_mm - free, end - free, free - f0
        if have_prev and a == pa and e == pe and d == pd:  # a fixed point: the rest repeat this block
            rem = n_k - kt
            free += rem * d
            prev_mm += rem * d
            end += rem * d
            kt = n_k
        pa, pe, pd = a, e, d
        have_prev = new
    return free, prev_mm, end


@njit_cached()
def _groups(free: int, prev_mm: int, end: int, n_mov: int, group: int, n_k: int, m_t: int, mov_total: int,
            chunk: int, rate: float, min_mm: int, ls_m: int, rows: int, lat: int, issue: int) -> tuple:
    """Every moving group of one stationary column tile (:func:`_k_tiles` per group). The first group always
    loads its stationary; a later one only when there are several K tiles (with one, the stationary loaded
    for the first group is reused). Full groups after the first repeat one block: extrapolated like the
    K tiles once the relative state repeats; the last (maybe partial) group is walked."""
    n_groups = (n_mov + group - 1) // group
    free, prev_mm, end = _k_tiles(free, prev_mm, end, n_k, True, m_t, 0, min(n_mov, group), mov_total, chunk,
                                  rate, min_mm, ls_m, rows, lat, issue)
    n_full = n_mov // group  # groups of `group` chunks whose last chunk is full size
    if mov_total % chunk:
        n_full = (n_mov - 1) // group
    pa = pe = pd = 0
    have_prev = False
    g = 1
    while g < n_groups:
        f0 = free
        c0 = g * group
        free, prev_mm, end = _k_tiles(free, prev_mm, end, n_k, n_k > 1, m_t, c0, min(n_mov, c0 + group),
                                      mov_total, chunk, rate, min_mm, ls_m, rows, lat, issue)
        full = g < n_full
        g += 1
        a, e, d = prev_mm - free, end - free, free - f0
        if have_prev and full and a == pa and e == pe and d == pd:
            rem = n_full - g  # identical full groups left (the last, partial one is walked below)
            free += rem * d
            prev_mm += rem * d
            end += rem * d
            g += rem
            have_prev = False
            continue
        pa, pe, pd = a, e, d
        have_prev = full
    return free, prev_mm, end


@njit_cached()
def _gemm_kernel(stat_total: int, mov_total: int, k_total: int, rows: int, cols: int, chunk: int,
                 group: int, rate: float, min_mm: int, ls_speed: float, lat: int, issue: int) -> tuple:
    """Walk the native WS tiling of a GEMM and apply the matmul recurrence of ``_seq_kernel``, extrapolating
    repeated blocks (:func:`_k_tiles`, :func:`_groups`; equal to the matmul-by-matmul walk, as the tests
    check against :func:`gemm_sequence` and :func:`matmul_timing`). Returns (end, matmuls, loads)."""
    n_stat = (stat_total + cols - 1) // cols
    n_mov = (mov_total + chunk - 1) // chunk
    n_k = (k_total + rows - 1) // rows
    n_groups = (n_mov + group - 1) // group
    free = 0
    prev_mm = 0
    end = 0
    n_full = stat_total // cols  # stationary tiles of `cols` columns
    pa = pe = pd = 0
    have_prev = False
    s = 0
    while s < n_stat:
        f0 = free
        m_t = min(cols, stat_total - s * cols)
        free, prev_mm, end = _groups(free, prev_mm, end, n_mov, group, n_k, m_t, mov_total, chunk, rate, min_mm,
                                     _ceil_div(m_t, ls_speed), rows, lat, issue)
        full = s < n_full
        s += 1
        a, e, d = prev_mm - free, end - free, free - f0
        if have_prev and full and a == pa and e == pe and d == pd:
            rem = n_full - s
            free += rem * d
            prev_mm += rem * d
            end += rem * d
            s += rem
            have_prev = False
            continue
        pa, pe, pd = a, e, d
        have_prev = full
    count = n_stat * n_mov * n_k
    loads = n_stat * (n_groups * n_k if n_k > 1 else 1)
    return end, count, loads


def scalesim_gemm_cycles(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> tuple[int, int]:
    """SCALE-Sim 3.0.0 "Total Cycles" and fold count of a GEMM with unlimited bandwidth."""
    if dataflow == "os":
        sr, sc, t, extra = m, n, k, rows + cols - 2
    elif dataflow == "ws":
        sr, sc, t, extra = k, n, m, 2 * rows + cols - 2
    elif dataflow == "is":
        sr, sc, t, extra = k, m, n, 2 * rows + cols - 2
    else:
        raise InfsimError(f"unknown dataflow {dataflow!r} (use one of {', '.join(DATAFLOWS)})")
    folds = -(-sr // rows) * -(-sc // cols)
    return folds * (t + extra) - 1, folds


def gemm(m: int, n: int, k: int, te: TensorEngineConfig, dtype: str = "bf16", dataflow: str = "ws",
         compat: str | None = None, psum_banks: int | None = None) -> GemmResult:
    """Tile ``C[M, N] = A[M, K] @ B[K, N]`` onto one tensor engine and time it (see module docstring).

    ``compat='scalesim'`` returns SCALE-Sim 3.0.0's Total Cycles for ``te.rows x te.cols`` (dtype rate,
    clock aside, is ignored there); native mode supports ``'ws'`` and ``'is'``.
    """
    if min(m, n, k) < 1:
        raise InfsimError(f"gemm: M, N, K must be >= 1 (got {m}, {n}, {k})")
    if dataflow not in DATAFLOWS:
        raise InfsimError(f"gemm: unknown dataflow {dataflow!r} (use one of {', '.join(DATAFLOWS)})")
    macs = m * n * k
    rows, cols = te.rows, te.cols
    if compat is not None:
        if compat != "scalesim":
            raise InfsimError(f"gemm: unknown compat mode {compat!r} (supported: scalesim)")
        total, folds = scalesim_gemm_cycles(m, n, k, rows, cols, dataflow)
        if total > MAX_CYCLES:  # the same bound as the native mode's (its results are floats and int64s)
            raise InfsimError(f"gemm: {m} x {n} x {k} takes {Decimal(total):.3g} cycles in SCALE-Sim's closed form, "
                              f"beyond the {MAX_CYCLES:.3g} cycles (2**62) the model counts")
        util = macs / (rows * cols * total)
        return GemmResult(m, n, k, rows, cols, dtype, dataflow, compat, total, total / te.clock_ghz, util,
                          folds, folds, macs)
    if dataflow == "os":
        raise InfsimError("gemm: the Neuron tensor engine has no output-stationary dataflow; "
                          "use --dataflow ws|is, or --compat scalesim for 'os'")
    rate = _rate(te, dtype)
    stat_total, mov_total = (n, m) if dataflow == "ws" else (m, n)
    chunk = te.moving_free_max
    n_mov = -(-mov_total // chunk)
    # the kernel counts cycles in int64: refuse a GEMM whose cycles could exceed it (a bound on each matmul)
    per_mm = (_ceil_div(chunk, rate) + te.min_moving_cycles + te.issue_overhead_cycles + rows + cols
              + _ceil_div(cols, te.stationary_load_speedup) + te.pipeline_latency_cycles)
    matmuls = -(-stat_total // cols) * n_mov * -(-k // rows)
    if matmuls * per_mm > MAX_CYCLES:
        raise InfsimError(f"gemm: {m} x {n} x {k} is {Decimal(matmuls):.3g} matmuls of up to {per_mm} cycles each on a "
                          f"{rows}x{cols} array, beyond the {MAX_CYCLES:.3g} cycles (2**62) the model counts")
    group = n_mov if psum_banks is None else max(1, min(int(psum_banks), n_mov))
    total, count, loads = _gemm_kernel(stat_total, mov_total, k, rows, cols, chunk, group, rate,
                                       te.min_moving_cycles, float(te.stationary_load_speedup),
                                       te.pipeline_latency_cycles, te.issue_overhead_cycles)
    util = macs / (rows * cols * rate * total)
    return GemmResult(m, n, k, rows, cols, dtype, dataflow, None, int(total), total / te.clock_ghz, util,
                      int(count), int(loads), macs)


def gemm_sequence(m: int, n: int, k: int, te: TensorEngineConfig, dtype: str = "bf16", dataflow: str = "ws",
                  psum_banks: int | None = None) -> dict[str, np.ndarray]:
    """The native matmul sequence of :func:`gemm` as arrays (k, m, n, rate, new_stationary) for tests/engines.

    Materialises one entry per matmul, so use it for small GEMMs; :func:`gemm` walks the same tiling
    without arrays.
    """
    if dataflow not in ("ws", "is"):
        raise InfsimError(f"gemm_sequence: native dataflow must be ws or is (got {dataflow!r})")
    rate = _rate(te, dtype)
    stat_total, mov_total = (n, m) if dataflow == "ws" else (m, n)
    rows, cols, chunk = te.rows, te.cols, te.moving_free_max
    n_mov = -(-mov_total // chunk)
    group = n_mov if psum_banks is None else max(1, min(int(psum_banks), n_mov))
    ks, ms, ns, new = [], [], [], []
    last = None
    for s in range(-(-stat_total // cols)):
        m_t = min(cols, stat_total - s * cols)
        for c0 in range(0, n_mov, group):
            for kt in range(-(-k // rows)):
                for c in range(c0, min(n_mov, c0 + group)):
                    ks.append(min(rows, k - kt * rows))
                    ms.append(m_t)
                    ns.append(min(chunk, mov_total - c * chunk))
                    new.append((s, kt) != last)
                    last = (s, kt)
    size = len(ks)
    return {"k": np.array(ks, dtype=np.int64), "m": np.array(ms, dtype=np.int64),
            "n": np.array(ns, dtype=np.int64), "rate": np.full(size, rate), "new_stationary": np.array(new)}
