"""The slow reference for the ``dram`` memory model: a run's HBM transfers replayed burst by burst through the
DRAM-command-level controllers (:class:`infsim.hw.hbm.model.HbmModel`).

:func:`replay` takes a program, the chip and the start time of every instruction from a cycle-engine
run, expands every DMA instruction's HBM side into its bursts (every element address of its access
pattern, :func:`infsim.hw.dma.element_addresses`, reduced to the distinct bursts of each contiguous
block, in transfer order), lets them arrive from the transfer's start at the rate of its DMA engine
(its HBM bytes over its engine time), and simulates them all together on the chip's HBM preset with
the chip's address hashing, refresh included. It returns, per instruction, when its last burst
completes.

This is an open-loop check: the engine's schedule (what it issued when, given the memory model's
answers) is fed to the controller. If the pool model is too optimistic, the engine issues transfers
earlier than the controller can serve them and the replay finishes later. ``tests/engine/test_memory_patterns.py``
holds the engine's HBM timing against it on small transfer mixes.

Left out: the DMA engines' arbitration chunks (a transfer's bursts arrive evenly over its engine time),
the pool's fixed ``hbm.latency_ns`` (the replay has the DRAM's own access latency instead); only
transfers on one chip's HBM (``chip``).
"""

from __future__ import annotations

import numpy as np

from infsim.config.schema import ChipConfig
from infsim.engine.costs import Costs
from infsim.errors import InfsimError
from infsim.hw import dma as dma_hw
from infsim.hw.hbm.model import HbmModel
from infsim.isa.dtypes import DType
from infsim.isa.opcodes import Op, Space
from infsim.isa.program import Program


def transfer_bursts(program: Program, i: int, slot: int, burst_bytes: int) -> np.ndarray:
    """Byte addresses of the bursts instruction ``i``'s operand ``slot`` (an HBM access pattern) touches, in
    transfer order: every contiguous block asks for each burst it overlaps once."""
    aps = program.aps
    a = int(program.instr["opnd"][i, slot])
    r = aps[a]
    nd = int(r["ndims"])
    isz = DType(int(r["dtype"])).itemsize
    base = program.tensor_base()[list(program.tensors)[int(r["tensor"])]]
    addr = base + dma_hw.element_addresses(int(Space.hbm), isz, 0, int(r["pcount"]), int(r["pstride"]),
                                           int(r["offset"]), [int(x) for x in r["strides"][:nd]],
                                           [int(x) for x in r["sizes"][:nd]])
    burst = addr // burst_bytes
    # a new request wherever the burst changes or the element does not continue the previous one
    new = np.ones(len(addr), dtype=bool)
    new[1:] = (burst[1:] != burst[:-1]) | (np.diff(addr) != isz)
    return burst[new] * burst_bytes


def replay(program: Program, chip: ChipConfig, costs: Costs, start_ps: np.ndarray, chip_index: int = 0,
           overrides: dict | None = None) -> np.ndarray:
    """Per instruction, the completion time (ps) of its last HBM burst on chip ``chip_index`` in the
    command-level replay of a run whose instructions started at ``start_ps`` (module docstring); ``-1``
    for instructions without an HBM side there. ``overrides``: fields of the HBM preset to change for
    the replay (e.g. ``{"controller.read_queue": 256}``)."""
    if not chip.hbm.dram_preset:
        raise InfsimError(f"chip '{chip.name}' has no hbm.dram_preset to replay against")
    model = HbmModel(chip.hbm.dram_preset, stacks=chip.hbm.stacks,
                     overrides={"controller.address_hash": chip.hbm.address_hash, **(overrides or {})})
    ab = model.access_bytes
    op = program.instr["op"]
    arrive, addrs, writes, owner = [], [], [], []
    d = costs.dma_rows
    assert np.array_equal(d, np.flatnonzero(op == int(Op.dma_copy)))
    sides = ((1, costs.hbm_read.values.tolist(), costs.hbm_read_chip.values.tolist(), False),
             (0, costs.hbm_write.values.tolist(), costs.hbm_write_chip.values.tolist(), True))
    eng_ps = costs.dma_engine_ps.values.tolist()
    for j, i in enumerate(d.tolist()):
        for slot, nbytes, where, is_write in sides:
            if nbytes[j] <= 0 or where[j] != chip_index:
                continue
            b = transfer_bursts(program, i, slot, ab)
            pace = eng_ps[j] / len(b)
            arrive.append(start_ps[i] + pace * np.arange(len(b)))
            addrs.append(b)
            writes.append(np.full(len(b), is_write))
            owner.append(np.full(len(b), i))
    out = np.full(len(op), -1, dtype=np.int64)
    if not addrs:
        return out
    res = model.simulate(np.concatenate(arrive) / 1000.0, np.concatenate(addrs), np.concatenate(writes))
    done = np.ceil(res.complete_ns * 1000.0).astype(np.int64)
    np.maximum.at(out, np.concatenate(owner), done)
    return out
