"""The infsim instruction set: dtypes, memory spaces, opcodes, access patterns and programs.

Imported as ``infsim.isa`` (the folder ``isa/`` is mapped into the ``infsim`` namespace).
"""

from .dtypes import DType, cast
from .errors import (
    AsmParseError,
    DeadlockError,
    EncodingError,
    IsaError,
    OperandError,
    ValidationError,
)
from .instruction import Instruction, make
from .opcodes import OPSPECS, ActFunc, AluOp, Engine, Op, ReduceOp, Space
from .operand import AccessPattern, hbm, psum, sbuf
from .program import Program, TensorDecl, TensorKind

__all__ = [
    "DType", "cast", "AsmParseError", "DeadlockError", "EncodingError", "IsaError", "OperandError",
    "ValidationError", "OPSPECS", "ActFunc", "AluOp", "Engine", "Op", "ReduceOp", "Space", "AccessPattern",
    "hbm", "psum", "sbuf", "Instruction", "Program", "TensorDecl", "TensorKind", "make",
]
