"""Static validation of a :class:`~infsim.isa.program.Program` against a chip configuration.

:func:`check` returns every :class:`Problem` found (deterministic order: program-level problems first,
then by instruction index, then in the order the rules below are checked); :func:`validate` raises
:class:`~infsim.isa.errors.ValidationError` listing them. Each problem names the instruction index, the
stream, the field (``slot.property``, ``engine``, ``queue``, ``wait[k]`` ...), the offending value and the
limit, so the assembler can map it to a source line as it is.

Rules (NeuronCore-v2 access rules of [NKI-ARCH2] and [NKI-ISA], ``docs/references.md``; every number comes
from the :class:`~infsim.config.schema.ChipConfig`):

* **Program**: ``cores_per_chip`` equals the chip's (``num_cores`` may exceed one chip: multi-chip
  programs), unless every core of the program sits on chip 0 either way (``num_cores <= min`` of the two,
  e.g. a one-core program with the default ``cores_per_chip=1``); every tensor lives on a chip of the
  program; the tensors of each chip (4 KiB aligned, as :meth:`Program.tensor_base` places them) fit
  ``hbm.capacity_gib``; group members are cores of the program.
* **Instruction**: opcode and engine are known and the engine may run the opcode; ``core < num_cores``;
  compute and sync streams have queue 0, DMA and collective streams ``queue < dma.queues_per_core``
  (collectives run on the DMA rings, as on Neuron).
* **Operands** (every slot): required slots present; space allowed by the slot; dtype allowed by the slot
  and, for tensor-engine inputs, supported by ``tensor_engine.macs_per_pe_per_cycle``; the memory is not in
  its ``no_access_engines`` (GpSimd cannot access PSUM). On-chip: ``partitions`` within the memory's
  partitions, ``partition_start + partitions`` within them too, the bytes touched in each partition
  (:meth:`AccessPattern.byte_extent`) within ``[0, bytes_per_partition)``. Compute-engine operands
  (tensor, vector, scalar, gpsimd; not DMA or collectives, whose descriptors address any partition)
  also obey the memory's ``partition_start_rules`` (NC-v2: 65-128 partitions start at 0, 33-64 at 0 or 64,
  1-32 at a multiple of 32) and ``max_free_elements`` (64K SBUF / 4K PSUM). HBM: the tensor exists, lives
  on the chip of the issuing core, and the bytes touched lie within the tensor.
* **Shapes**: element-wise operands (``tensor_tensor``, ``tensor_copy``, ``select``, the data operands of
  ``tensor_scalar`` and ``activate``) must have *exactly the same shape* ``(partitions, *free sizes)``, as the
  opcode table says (no implicit reshaping; broadcast with zero strides instead). Per-partition operands
  (``scalar0``/``scalar1``, ``bias``/``scale``, ``reduce_dst``) have one element per partition and the
  same partition count as ``src``. ``tensor_tensor`` inputs are not both in PSUM.
* **matmul**: K = stationary partitions = moving partitions <= ``tensor_engine.rows``; M = stationary free
  size <= ``cols``; N = moving free size <= ``moving_free_max``; dst partitions = M, dst free size = N;
  stationary and moving share a dtype; dst lies within one PSUM bank (``bytes_per_partition / banks``).
  **transpose**: P = src partitions <= rows, F = src free size <= cols, dst is [F, P] in one PSUM bank.
* **tensor_reduce**: 1 <= axes <= free dims of src; dst shape = src shape without the reduced dims (one
  element per partition when all are reduced). **iota**: one multiplier per free dim of dst.
  **dma_copy**: same element count.
* **Collectives**: the group exists and the issuing core is a member; all_reduce dst = src elements,
  all_gather dst = members * src, reduce_scatter src = members * dst; send/recv peer is a core of the
  program. (Matching ops across members is the interpreter's job.)
* **Semaphores** (a static deadlock check; counters only grow): every wait value is at most the total of
  all increments to that semaphore (signals plus barrier arrivals), else it can never be satisfied;
  barriers on one semaphore share one ``count`` >= 1, and the k-th barrier of a stream on it needs
  ``k * count`` arrivals, which must not exceed the total.

Where the rules live: this module runs them and holds the program-level and semaphore rules;
``isa/validate_aps.py`` the per-AP properties and problems; ``isa/validate_instr.py`` the stream-field,
operand-slot and opcode rules; ``isa/validate_report.py`` the :class:`Problem` type and their ordering.

Performance: rules run column-wise with numpy over ``program.instr`` and the deduplicated AP table
(per-AP properties are computed once and indexed); only the rare opcodes (collectives, barriers, iota,
tensor_reduce) and the problems themselves are handled in Python. The instruction and semaphore rules
walk the instruction table in chunks of :data:`CHUNK_INSTRUCTIONS` (``chunk`` argument of :func:`check`),
so the temporaries stay bounded however long the program (a Llama-2-70B tp 24 step has 7M instructions);
the problems and their order do not depend on the chunk size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from infsim.config.schema import ChipConfig

from .errors import ValidationError
from .opcodes import Op
from .program import Program
from .records import read_fields
from .validate_aps import ApTable
from .validate_instr import InstructionRules
from .validate_report import Problem, Reporter

__all__ = ["CHUNK_INSTRUCTIONS", "Problem", "check", "validate"]

#: instructions checked per numpy pass (bounds the temporaries: ~100 bytes per instruction and column)
CHUNK_INSTRUCTIONS = 1 << 18


def validate(program: Program, chip: ChipConfig) -> None:
    """Raise :class:`ValidationError` listing every problem of ``program`` on ``chip`` (if any).

    The error's ``items`` attribute holds the :class:`Problem` list.
    """
    problems = check(program, chip)
    if problems:
        raise ValidationError([str(p) for p in problems], problems)


def check(program: Program, chip: ChipConfig, *, chunk: int = CHUNK_INSTRUCTIONS, screen: bool = True) -> list[Problem]:
    """Every problem of ``program`` on ``chip``, program-level first, then by instruction index.

    ``chunk``: instructions per numpy pass (memory bound; the result does not depend on it). ``screen=False``
    runs every operand-slot rule on every instruction instead of on those a per-slot table lookup does not
    clear (:class:`~.validate_instr.InstructionRules`; slower, same result: the reference for tests)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    rep = Reporter(program)
    _program_level(rep, program, chip)
    aps = ApTable(program, chip)
    n = len(program.instr)
    for lo in range(0, n, chunk):
        InstructionRules(rep, program, chip, aps, lo, min(n, lo + chunk), screen=screen).run()
    _semaphores(rep, program, chunk)
    return rep.problems()


def _program_level(rep: Reporter, p: Program, chip: ChipConfig) -> None:
    """Cores per chip, tensor chips and HBM capacity, group members (module docstring, **Program**)."""
    if p.cores_per_chip != chip.cores_per_chip and p.num_cores > min(p.cores_per_chip, chip.cores_per_chip):
        rep.add(None, "cores_per_chip",
                f"program has {p.cores_per_chip} cores per chip, chip {chip.name} has {chip.cores_per_chip} "
                f"(its {p.num_cores} cores would map to chips differently)")
    nchips = p.num_chips
    used: dict[int, int] = {}
    for t in p.tensors.values():
        if not (0 <= t.chip < nchips):
            rep.add(None, f"tensor {t.name}", f"chip {t.chip} not in [0, {nchips}) (the program's chips)")
        used[t.chip] = used.get(t.chip, 0) + ((t.num_bytes + 4095) // 4096) * 4096
    cap = chip.hbm_bytes
    for c in sorted(used):
        if used[c] > cap:
            rep.add(None, f"chip {c} hbm",
                    f"tensors need {used[c]} bytes, exceeds hbm.capacity_gib {chip.hbm.capacity_gib:g} "
                    f"({cap} bytes)")
    for g, members in p.groups.items():
        for m in members:
            if not (0 <= m < p.num_cores):
                rep.add(None, f"group {g}", f"member core {m} not in [0, {p.num_cores}) (num_cores)")


def _semaphores(rep: Reporter, p: Program, chunk: int) -> None:
    """The static deadlock check (module docstring, **Semaphores**), ``chunk`` instructions at a time. Each
    pass first screens the chunk with all its slots at once; only a chunk with a problem goes slot by slot
    (which reports them, in the same order whatever the screen)."""
    ins = p.instr
    n = len(ins)
    if n == 0:
        return
    ns = len(p.semaphores)
    names = p.semaphores
    total = np.zeros(ns, np.float64)
    for idx, part in _chunks(ins, chunk):  # totals of all signals (pass 1)
        ssem, sval = read_fields(part, "ssem", "sval")
        if (ssem >= ns).any():  # an undeclared semaphore: reported slot by slot
            for k in range(ssem.shape[1]):
                _declared(rep, idx, ssem[:, k].astype(np.int64), ns, f"signal[{k}]")
        for k in range(ssem.shape[1]):  # (per slot: a 2-D mask selects several times slower)
            s = ssem[:, k]
            v = (s >= 0) & (s < ns)
            total += np.bincount(s[v], weights=sval[v, k], minlength=ns)[:ns]
    bar = np.flatnonzero(ins["op"] == int(Op.barrier))
    bsem = ins["i0"][bar].astype(np.int64)
    bcount = ins["i1"][bar].astype(np.int64)
    bvalid = (bsem >= 0) & (bsem < ns)
    total += np.bincount(bsem[bvalid], minlength=ns)[:ns]
    # per semaphore index + 1 (clipped to [-1, ns]): the largest wait value that can be satisfied
    reach = np.concatenate([[np.inf], total, [-np.inf]])  # unused slot: anything; undeclared: nothing
    for idx, part in _chunks(ins, chunk):  # waits against the totals (pass 2)
        wsem32, wval32 = read_fields(part, "wsem", "wval")
        if not (wval32 > reach[np.clip(wsem32, -1, ns) + 1]).any():
            continue  # every wait declared and satisfiable
        wsem = wsem32.astype(np.int64)
        wval = wval32.astype(np.float64)
        for k in range(wsem.shape[1]):
            s = wsem[:, k]
            v = _declared(rep, idx, s, ns, f"wait[{k}]")
            tot = np.where(v, total[np.where(v, s, 0)] if ns else 0.0, np.inf)
            rep.emit(idx, wval[:, k] > tot, f"wait[{k}]", lambda j, s=s, k=k, wval=wval: (
                f"waits for {names[int(s[j])]} >= {int(wval[j, k])} but all signals to {names[int(s[j])]} "
                f"total {int(total[int(s[j])])}: can never be satisfied (deadlock)"))
    # barriers
    first_count: dict[int, int] = {}
    seen: dict[tuple[int, int, int, int], int] = {}
    for j in range(len(bar)):
        i, bs, c = int(bar[j]), int(bsem[j]), int(bcount[j])
        if not bvalid[j]:
            rep.add(i, "sem", f"semaphore index {bs} not declared ({ns} semaphores)")
            continue
        if c < 1:
            rep.add(i, "count", f"{c} (a barrier counts at least 1 arrival)")
            continue
        fc = first_count.setdefault(bs, c)
        if c != fc:
            rep.add(i, "count", f"{c} != {fc}, the count of the first barrier on {names[bs]}")
        r = ins[i]
        key = (int(r["core"]), int(r["engine"]), int(r["queue"]), bs)
        kth = seen[key] = seen.get(key, 0) + 1
        if kth * c > total[bs]:
            rep.add(i, "count", f"barrier #{kth} of this stream on {names[bs]} needs {names[bs]} >= {kth * c} "
                                f"but all arrivals and signals total {int(total[bs])} (deadlock)")


def _chunks(ins: np.ndarray, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(instruction indices, records)`` of consecutive pieces of ``chunk`` instructions."""
    for lo in range(0, len(ins), chunk):
        part = ins[lo:lo + chunk]
        yield np.arange(lo, lo + len(part)), part


def _declared(rep: Reporter, idx: np.ndarray, sem: np.ndarray, ns: int, field: str) -> np.ndarray:
    """Report the semaphore indices of column ``sem`` beyond the ``ns`` declared ones (negative = unused);
    return the mask of declared ones."""
    rep.emit(idx, sem >= ns, field, lambda j: f"semaphore index {int(sem[j])} not declared ({ns} semaphores)")
    return (sem >= 0) & (sem < ns)
