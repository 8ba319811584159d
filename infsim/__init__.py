"""infsim: a cycle-level architectural simulator of an Inferentia/Trainium-style inference ASIC."""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # the type checker sees the real signature; at run time the import is deferred
    from infsim.runner import run
else:

    def run(*args: Any, **kwargs: Any) -> Any:
        """Simulate one prefill/decode step: see :func:`infsim.runner.run` (imported lazily)."""
        from infsim.runner import run as _run

        return _run(*args, **kwargs)
