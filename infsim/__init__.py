"""infsim: a cycle-level architectural simulator of an Inferentia/Trainium-style inference ASIC."""

__version__ = "0.1.0"


def run(*args: object, **kwargs: object) -> object:
    """Simulate one prefill/decode step: see :func:`infsim.runner.run` (imported lazily)."""
    from infsim.runner import run as _run

    return _run(*args, **kwargs)  # type: ignore[arg-type]
