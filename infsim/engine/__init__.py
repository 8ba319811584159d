"""The cycle-level engine: every instruction stream of a program, coupled by semaphores, with the DMA
engines, the memory interface and the collective interface as shared resources. Two engines with one set
of timing rules (``simulate(mode=...)``): the simpy reference (``'plain'``) and a numba kernel
(``'numba'``, the default), equal instruction by instruction.

* :mod:`infsim.engine.core` -- the timing rules and the reference engine (compute and collective streams
  as simpy processes, deadlock reports); it creates the parts below; :func:`~infsim.engine.core.run_engine`
  picks the engine;
* :mod:`infsim.engine.numba_engine` -- the numba engine: the program laid out in arrays, why its times are
  the reference's; :mod:`infsim.engine.kernel` -- its compiled loop;
* :mod:`infsim.engine.semaphores` -- the reference's monotonic semaphores (signals as timed events);
* :mod:`infsim.engine.dma_arbiter` -- DMA engines serving their queues round-robin in arbitration chunks;
* :mod:`infsim.engine.rendezvous` -- which instructions form one collective, and when it ends;
* :mod:`infsim.engine.streams` -- the per-stream and per-instruction state the reference's parts share,
  the in-order signal rule, barrier values, deadlock reports and the raw result of a run;
* :mod:`infsim.engine.events` -- bare simpy events and the priority that orders DMA decisions last;
* :mod:`infsim.engine.costs` -- per-instruction static costs from the hardware models, vectorised;
* :mod:`infsim.engine.memory` -- the ``MemoryModel`` interface and its registry, with the models beside it:
  ``simple`` (bandwidth pool + latency) and ``dram`` (the default: the pool charged per transfer at the
  DRAM-command-level model's efficiency for its access pattern, with read/write mixing), and the
  command-level replay that ``dram`` is tested against;
* :mod:`infsim.engine.collectives` -- the ``CollectiveTiming`` interface and its registry, with the model
  beside it: ``link`` (the topology-aware link model of :mod:`infsim.hw.collectives`);
* :mod:`infsim.engine.synthetic` -- a realistic synthetic program for benchmarks.

Most callers use :func:`infsim.sim.simulate`. The package itself imports nothing, so importing one part
(for example the memory models) does not load the event engine.
"""
