"""Lowering: op graphs -> ISA programs (tiling, SBUF/PSUM allocation, DMA streaming, semaphores)."""

from .alloc import LoweringError
from .transformer import Lowered, lower, rope_tables

__all__ = ["Lowered", "LoweringError", "lower", "rope_tables"]
