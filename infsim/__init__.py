"""infsim: a cycle-level architectural simulator of an Inferentia/Trainium-style inference ASIC."""

__version__ = "0.1.0"
