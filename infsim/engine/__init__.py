"""The cycle-level engine: simpy processes per instruction stream, semaphores, the DMA controller, the
memory interface (``SimpleMemory`` today, a DRAM-level model later) and the simple collective model.

* :mod:`infsim.engine.costs` -- per-instruction static costs, vectorised;
* :mod:`infsim.engine.core` -- the event engine (fast path and plain per-instruction model);
* :mod:`infsim.engine.memory` -- the ``MemoryModel`` interface and ``SimpleMemory``;
* :mod:`infsim.engine.collectives` -- the ``CollectiveTiming`` interface and the ring placeholder;
* :mod:`infsim.engine.synthetic` -- a realistic synthetic program for benchmarks.

Most callers use :func:`infsim.sim.simulate`.
"""

from .collectives import CollectiveTiming, default_collectives
from .core import EngineRun, Simulator, run_engine
from .costs import Costs, compute_costs
from .memory import MEMORY_MODELS, MemoryModel, SimpleMemory, make_memory

__all__ = ["CollectiveTiming", "default_collectives", "EngineRun", "Simulator", "run_engine", "Costs", "compute_costs",
           "MEMORY_MODELS", "MemoryModel", "SimpleMemory", "make_memory"]
