"""The cycle-level engine: every instruction stream of a program as a simpy process, coupled by semaphores,
with the DMA engines, the memory interface and the collective interface as shared resources.

* :mod:`infsim.engine.core` -- the simulator loop: compute and collective streams (fast path and plain
  per-instruction model), deadlock reports; it creates the parts below;
* :mod:`infsim.engine.semaphores` -- monotonic semaphores: the plain event model and the fast one that
  knows future signals;
* :mod:`infsim.engine.dma_arbiter` -- DMA engines serving their queues round-robin in arbitration chunks;
* :mod:`infsim.engine.rendezvous` -- which instructions form one collective, and when it ends;
* :mod:`infsim.engine.streams` -- the per-stream and per-instruction state the parts share, and the raw
  result of a run;
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
