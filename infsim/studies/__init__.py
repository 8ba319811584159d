"""Studies built on the simulator library: questions an architect asks of many simulated steps.

- :mod:`~infsim.studies.compare`: baseline vs target chip on a workload set, with Shapley attribution of the
  speedup to resource groups (``infsim compare``).
- :mod:`~infsim.studies.inverse`: the cheapest resource scalings that reach a target speedup
  (``infsim what-it-takes``).
- :mod:`~infsim.studies.sweep`: resumable design-space sweeps to parquet, locally or on dask.distributed
  (``infsim sweep``; needs the ``sweep`` extra).
- :mod:`~infsim.studies.search`: multi-objective search over a sweep spec's axes with Optuna
  (``infsim search``; needs the ``search`` extra).
- :mod:`~infsim.studies.plots`: their figures.

The library below them (config, models, lowering, ISA, engine, hardware models, :func:`infsim.run`) does
not import this package. Nothing is imported here, so importing one study does not pull in another's
dependencies.
"""
