"""Lowering: op graphs -> ISA programs (tiling, SBUF/PSUM allocation, DMA streaming, semaphores)."""

from .alloc import LoweringError
from .attention import rope_tables
from .transformer import Lowered, lower

__all__ = ["Lowered", "LoweringError", "lower", "rope_tables"]
