"""The infsim instruction set: dtypes, memory spaces, opcodes, access patterns and programs.

Imported as ``infsim.isa`` (the folder ``isa/`` is mapped into the ``infsim`` namespace). This package
exports the types a program is built from; the tools that read, write, check and run programs are
submodules:

* ``dtypes`` (DType and conversion rules), ``opcodes`` (the opcode table: engines, operand slots,
  immediates), ``operand`` (AccessPattern), ``instruction`` (Instruction, make), ``records`` (the record
  layouts of the columnar tables), ``program`` (Program), ``errors``;
* ``asm`` (text assembly; ``asm_lexer``, ``asm_printer``), ``encoding`` (binary encoding);
* ``validate`` (static checks against a chip config; ``validate_aps``, ``validate_instr``,
  ``validate_report``);
* ``interp`` (the reference interpreter: the semantics; ``interp_numerics`` the arithmetic, ``interp_state``
  the memories, decoded instructions and the result);
* ``strategies`` (hypothesis strategies for random ISA programs; needs ``hypothesis``).
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
