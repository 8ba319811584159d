"""The two analytical fidelities: faster answers than the cycle engine, each held against it by tests.

The user-facing fidelity names are ``cycle`` and ``analytical`` (``--fidelity`` on the CLI, ``fidelity=``
in Python, ``"fidelity"`` in results). ``analytical`` names a different model depending on what is
simulated, so in code each has its own module:

* :mod:`infsim.fidelity.program` -- **program level**. Input: a lowered ISA program. Closed-form cost per
  instruction (the cycle engine's own :mod:`infsim.engine.costs`), a numba dependency scoreboard over
  every stream's semaphores, raised to the per-chip HBM and per-DMA-engine bandwidth bounds; no event
  loop, no arbitration. Used by ``simulate(program, chip, fidelity="analytical")`` and
  ``infsim sim FILE --fidelity analytical``. Held against the cycle engine by ``tests/engine/test_engine.py``:
  every example program on every chip preset within 10%
  (``test_examples_every_preset_and_analytical_within_10pct``), the synthetic instruction mix within
  10% at full and at starved HBM bandwidth (``test_analytical_within_10pct_synthetic``), an all-reduce
  exactly equal (``test_all_reduce_ring_and_barrier``), and the same deadlocks
  (``test_collective_without_partner_is_a_deadlock``).
* :mod:`infsim.fidelity.step` -- **step level**. Input: a model and a workload (no program is lowered).
  The op graph of one step costed in closed form with the instruction mix the lowering would emit (its
  step plan, weight ring and slab layout) and a schedule of weight streaming against compute. Used by
  ``infsim.run(..., fidelity="analytical")`` and hence ``infsim run``, ``compare``, ``what-it-takes``,
  ``sweep`` and ``search`` at analytical fidelity (the default of the studies). Held against the cycle
  engine (lowering + simulation of the same step) by ``tests/fidelity/test_fidelity_step.py``: full-size
  Llama-2-7B decode and prefill on inf2 within 10%, and every workload of the study's default set on
  inf2, nextgen-hbm3e and nextgen-decode within 10%.

Both use the chip's memory and collective models through the engine's interfaces
(:mod:`infsim.engine.memory`, :mod:`infsim.engine.collectives`), so the three fidelities share one
definition of HBM streaming bandwidth and of every collective's duration. Both results are assembled
like the cycle engine's (:func:`infsim.result.build_result` for programs, :class:`infsim.runner.RunResult`
for steps).
"""
