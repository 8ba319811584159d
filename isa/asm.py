"""Text assembly (``.s``): parsing, and the printer's entry points (grammar in ``docs/asm-grammar.md``).

:func:`print_program` writes the canonical text of a :class:`~infsim.isa.program.Program`;
:func:`parse` reads text back, so that ``parse(print_program(p)) == p`` for every program whose
names are printable identifiers. Every problem in the text, including an operand or immediate that
the ISA refuses (out-of-range field, engine that cannot run the opcode, undeclared name), raises
:class:`~infsim.isa.errors.AsmParseError` naming ``file:line:column`` and what was expected.

Left out: macros, labels, expressions and include files (programs are generated, not written by
hand at scale); the parser stops at the first error rather than recovering to report several.
Chip-dependent legality (sizes, bounds, dtypes per engine) is validation's job (``isa/validate.py``).

Modules: this one parses (directives, operands, immediates, instructions); ``isa/asm_lexer.py`` holds the token
patterns and the line cursor that positions errors; ``isa/asm_printer.py`` the printer (re-exported here).
"""

from __future__ import annotations

import re
from pathlib import Path

from .asm_lexer import (
    DIM,
    FAST_HBM,
    FAST_ONCHIP,
    FLOAT,
    INT,
    KEY,
    NAME,
    SIGNAL,
    STREAM,
    VALUE,
    WAIT,
    Line,
)
from .asm_printer import format_operand, print_program
from .dtypes import DType
from .errors import AsmParseError, IsaError
from .instruction import Instruction
from .opcodes import MAX_FREE_DIMS, MAX_SIGNALS, MAX_WAITS, OPSPECS, Engine, Op, OpSpec, Space
from .operand import AccessPattern
from .program import Program, TensorKind
from .records import ENUM_KINDS, IMM_FIELDS

__all__ = ["print_program", "parse", "parse_with_lines", "parse_file", "parse_file_with_lines", "format_operand"]

_DTYPE_NAMES = ", ".join(d.name for d in DType)
_CONVERT_ERRORS = (IsaError, ValueError, OverflowError, TypeError, KeyError, IndexError)


class _Parser:
    """One pass over the text, a line at a time: a directive (``.program``, ``.tensor``, ``.sem``, ``.group``,
    ``.stream``) or an instruction of the current stream, appended to the program as it is read."""

    def __init__(self, text: str, filename: str):
        self.text = text
        self.file = filename
        self.program: Program | None = None
        self.lines: list[int] = []
        self.stream: tuple[int, Engine, int] | None = None
        self.ap_cache: dict[str, AccessPattern] = {}

    # ---- helpers -----------------------------------------------------------------------------
    def prog(self, ln: Line) -> Program:
        if self.program is None:
            self.program = Program()
        return self.program

    def run(self) -> tuple[Program, list[int]]:
        for lineno, raw in enumerate(self.text.split("\n"), start=1):
            h = raw.find("#")
            body = raw if h < 0 else raw[:h]
            ln = Line(body, self.file, lineno)
            if ln.at_end():
                continue
            if ln.peek() == ".":
                self.directive(ln)
            else:
                self.instruction(ln)
        return self.prog(Line("", self.file, 0)), self.lines

    # ---- directives --------------------------------------------------------------------------
    def directive(self, ln: Line) -> None:
        start = ln.pos
        ln.pos += 1
        m = KEY.match(ln.text, ln.pos)
        name = m.group(0) if m else ""
        handler = {
            "program": self.d_program, "tensor": self.d_tensor, "sem": self.d_sem, "group": self.d_group,
            "stream": self.d_stream,
        }.get(name)
        if handler is None:
            raise ln.error(f"unknown directive {ln.found() if not name else repr('.' + name)} "
                           "(expected .program, .tensor, .sem, .group or .stream)", start)
        ln.skip(m)
        if ln.pos < len(ln.text) and not ln.text[ln.pos].isspace():
            raise ln.error(f"unknown directive '.{name}{ln.text[ln.pos]}...'", start)
        handler(ln, start)
        if not ln.at_end():
            raise ln.error(f"expected end of line, found {ln.found()}")

    def d_program(self, ln: Line, start: int) -> None:
        if self.program is not None:
            raise ln.error(".program must come first and only once", start)
        vals = {"cores": 1, "cores_per_chip": 1}
        seen: set[str] = set()
        while not ln.at_end():
            kpos = ln.pos
            key = ln.match(KEY, "'cores=N' or 'cores_per_chip=N'").group(0)
            if key not in vals:
                raise ln.error(f"unknown .program field '{key}' (expected cores, cores_per_chip)", kpos)
            if key in seen:
                raise ln.error(f"field '{key}' given twice", kpos)
            seen.add(key)
            ln.expect("=")
            vals[key] = ln.int_("a positive integer")
        try:
            self.program = Program(vals["cores"], vals["cores_per_chip"])
        except _CONVERT_ERRORS as e:
            raise ln.error(str(e), start) from None

    def d_tensor(self, ln: Line, start: int) -> None:
        p = self.prog(ln)
        ln.ws()
        npos = ln.pos
        name = ln.match(NAME, "a tensor name").group(0)
        ln.ws()
        dpos = ln.pos
        dt = self.dtype(ln, KEY.match(ln.text, ln.pos), dpos)
        ln.expect("[", "'[' and the tensor shape")
        shape = ln.int_list("a dimension size")
        ln.expect("]", "',' or ']'")
        ln.ws()
        kpos = ln.pos
        kind_m = ln.match(KEY, "a tensor kind (input, weight, output or scratch)")
        if kind_m.group(0) not in TensorKind.__members__:
            raise ln.error(f"unknown tensor kind '{kind_m.group(0)}' (expected input, weight, output or scratch)", kpos)
        chip = 0
        if not ln.at_end():
            ln.expect("chip=", "'chip=N' or end of line")
            chip = ln.int_("a chip number")
        try:
            p.add_tensor(name, dt, shape, TensorKind[kind_m.group(0)], chip)
        except _CONVERT_ERRORS as e:
            raise ln.error(str(e), npos) from None

    def d_sem(self, ln: Line, start: int) -> None:
        p = self.prog(ln)
        while True:
            ln.ws()
            npos = ln.pos
            name = ln.match(NAME, "a semaphore name").group(0)
            try:
                p.add_semaphore(name)
            except _CONVERT_ERRORS as e:
                raise ln.error(str(e), npos) from None
            ln.ws()
            if ln.peek() != ",":
                return
            ln.pos += 1

    def d_group(self, ln: Line, start: int) -> None:
        p = self.prog(ln)
        ln.ws()
        npos = ln.pos
        name = ln.match(NAME, "a group name").group(0)
        ln.ws()
        cores = ln.int_list("a core number")
        try:
            p.add_group(name, cores)
        except _CONVERT_ERRORS as e:
            raise ln.error(str(e), npos) from None

    def d_stream(self, ln: Line, start: int) -> None:
        self.prog(ln)
        ln.ws()
        spos = ln.pos
        m = ln.match(STREAM, "a stream 'cC.ENGINE[Q]' such as c0.tensor or c0.dma1")
        ename = m.group(2)
        if ename not in Engine.__members__:
            raise ln.error(f"unknown engine '{ename}' (expected one of {', '.join(e.name for e in Engine)})", spos)
        try:
            core = int(m.group(1))
            queue = int(m.group(3)) if m.group(3) else 0
        except ValueError:
            raise ln.error("stream number too long", spos) from None
        if core > 0xFFFF:
            raise ln.error(f"core {core} not in [0, 65535]", spos)
        if queue > 0xFF:
            raise ln.error(f"queue {queue} not in [0, 255]", spos)
        self.stream = (core, Engine[ename], queue)

    # ---- pieces ------------------------------------------------------------------------------
    def dtype(self, ln: Line, m: re.Match[str] | None, pos: int) -> DType:
        name = m.group(0) if m else ""
        if name not in DType.__members__:
            raise ln.error(f"expected a dtype ({_DTYPE_NAMES}), found {ln.found()}", pos)
        ln.skip(m)
        return DType[name]

    def operand(self, ln: Line, spec: OpSpec, slot: str) -> AccessPattern:
        start = ln.pos
        text = ln.text
        # fast path: the exact operand text was parsed before (an operand never contains ']' inside)
        j = text.find("]", start)
        if j >= 0:
            ap = self.ap_cache.get(text[start : j + 1])
            if ap is not None:
                ln.pos = j + 1
                return ap
        # canonical text: parse once, cache by text
        m = FAST_ONCHIP.match(text, start) or FAST_HBM.match(text, start)
        if m is not None:
            s = m.group(0)
            ap = self.ap_cache.get(s)
            if ap is None:
                ap = self.operand_slow(Line(text, ln.file, ln.lineno), start)
                self.ap_cache[s] = ap
            ln.pos = m.end()
            return ap
        return self.operand_slow(ln, start)

    def operand_slow(self, ln: Line, start: int) -> AccessPattern:
        ln.pos = start
        m = KEY.match(ln.text, ln.pos)
        sp = m.group(0) if m else ""
        tensor = None
        if sp in ("sbuf", "psum"):
            ln.skip(m)
            space = Space[sp]
        elif sp == "hbm":
            ln.skip(m)
            ln.expect(".", "'.' and a tensor name after 'hbm'")
            tpos = ln.pos
            tensor = ln.match(NAME, "a tensor name").group(0)
            if tensor not in self.prog(ln).tensors:
                raise ln.error(f"undeclared tensor '{tensor}' (declare it with .tensor)", tpos)
            space = Space.hbm
        else:
            raise ln.error(f"expected an operand (sbuf[...], psum[...] or hbm.TENSOR[...]), found {ln.found()}")
        ln.expect("[")
        ln.ws()
        ppos = ln.pos
        if space == Space.hbm:
            pstart = 0
            rows = ln.int_("the row count ROWS of 'ROWS@ROWSTRIDE'")
            ln.expect("@", "'@ROWSTRIDE'")
            pstride = ln.int_("the row stride", signed=True)
        else:
            pstride = 0
            pstart = ln.int_("the first partition P0 of 'P0:P1'")
            ln.expect(":", "':' in 'P0:P1'")
            pend = ln.int_("the end partition P1 of 'P0:P1'")
            if pend <= pstart:
                raise ln.error(f"partition range {pstart}:{pend} is empty (expected P1 > P0)", ppos)
            rows = pend - pstart
        ln.ws()
        ln.expect("+", "'+OFFSET' (byte offset)")
        offset = ln.int_("a byte offset")
        dims: list[tuple[int, int]] = []
        while True:
            ln.ws()
            if ln.peek() != "(":
                break
            dpos = ln.pos
            dm = DIM.match(ln.text, ln.pos)
            if dm is None:
                raise ln.error(f"expected a free dimension '(STRIDE,SIZE)', found {ln.found()}")
            if len(dims) == MAX_FREE_DIMS:
                raise ln.error(f"too many free dimensions (at most {MAX_FREE_DIMS})", dpos)
            try:
                dims.append((int(dm.group(1)), int(dm.group(2))))
            except ValueError:
                raise ln.error("number too long", dpos) from None
            ln.pos = dm.end()
        dpos = ln.pos
        dt = self.dtype(ln, KEY.match(ln.text, ln.pos), dpos)
        ln.ws()
        ln.expect("]", "']' closing the operand")
        try:
            return AccessPattern(space, dt, pstart, rows, offset, tuple(dims), tensor, pstride)
        except _CONVERT_ERRORS as e:
            raise ln.error(str(e), start) from None

    def imm(self, ln: Line, spec: OpSpec, kind: str, name: str) -> object:
        vpos = ln.pos
        m = VALUE.match(ln.text, ln.pos)
        tok = m.group(0) if m else ""
        if not tok:
            raise ln.error(f"expected a value for '{name}', found {ln.found()}")
        ln.skip(m)
        p = self.prog(ln)
        if kind in ENUM_KINDS:
            enum = ENUM_KINDS[kind]
            if tok not in enum.__members__:
                raise ln.error(f"'{name}': unknown {kind} '{tok}' (expected one of {', '.join(enum.__members__)})",
                               vpos)
            return enum[tok]
        if kind == "bool":
            if tok not in ("true", "false"):
                raise ln.error(f"'{name}': expected true or false, found '{tok}'", vpos)
            return tok == "true"
        if kind == "int":
            if not INT.fullmatch(tok):
                raise ln.error(f"'{name}': expected an integer, found '{tok}'", vpos)
            try:
                return int(tok)
            except ValueError:
                raise ln.error(f"'{name}': integer too long", vpos) from None
        if kind == "float":
            if not FLOAT.fullmatch(tok):
                raise ln.error(f"'{name}': expected a number (such as 0.5, 1e-05, inf, -inf, nan), found '{tok}'",
                               vpos)
            try:
                return float(tok)
            except (ValueError, OverflowError):
                raise ln.error(f"'{name}': expected a number, found '{tok}'", vpos) from None
        if kind == "ints":
            body = tok[1:-1] if tok.startswith("(") and tok.endswith(")") else tok
            if body == "":
                return ()
            items = body.split(",")
            if len(items) > MAX_FREE_DIMS or not all(INT.fullmatch(x) for x in items):
                raise ln.error(f"'{name}': expected up to {MAX_FREE_DIMS} comma-separated integers "
                               f"(or '()' for none), found '{tok}'", vpos)
            try:
                return tuple(int(x) for x in items)
            except ValueError:
                raise ln.error(f"'{name}': integer too long", vpos) from None
        if kind == "sem":
            if tok not in p._sem_index:
                raise ln.error(f"'{name}': undeclared semaphore '{tok}' (declare it with .sem)", vpos)
            return tok
        if kind == "group":
            if tok not in p.groups:
                raise ln.error(f"'{name}': undeclared replica group '{tok}' (declare it with .group)", vpos)
            return tok
        raise ln.error(f"'{name}': unsupported immediate kind {kind}", vpos)  # pragma: no cover

    def sync_list(self, ln: Line, key: str) -> tuple[tuple[str, int], ...]:
        rx, form, limit = (WAIT, "SEM>=VALUE", MAX_WAITS) if key == "wait" else (SIGNAL, "SEM+VALUE", MAX_SIGNALS)
        p = self.prog(ln)
        out: list[tuple[str, int]] = []
        while True:
            ipos = ln.pos
            m = ln.match(rx, f"'{form}'")
            sem = m.group(1)
            if sem not in p._sem_index:
                raise ln.error(f"undeclared semaphore '{sem}' (declare it with .sem)", ipos)
            if len(out) == limit:
                raise ln.error(f"at most {limit} {key}s per instruction", ipos)
            try:
                out.append((sem, int(m.group(2))))
            except ValueError:
                raise ln.error("number too long", ipos) from None
            if ln.peek() != ",":
                break
            ln.pos += 1
        if ln.pos < len(ln.text) and not ln.text[ln.pos].isspace():
            raise ln.error(f"expected ',', white space or end of line after '{key}' entry, found {ln.found()}")
        return tuple(out)

    # ---- instructions ------------------------------------------------------------------------
    def instruction(self, ln: Line) -> None:
        p = self.prog(ln)
        opos = ln.pos
        m = KEY.match(ln.text, ln.pos)
        opname = m.group(0) if m else ""
        if opname not in Op.__members__:
            raise ln.error(f"expected an opcode or a directive, found {ln.found()} (opcodes: "
                           f"{', '.join(o.name for o in Op)})")
        ln.skip(m)
        if self.stream is None:
            raise ln.error("instruction before any '.stream cC.ENGINE' directive", opos)
        op = Op[opname]
        spec = OPSPECS[op]
        slot_index = {s.name: k for k, s in enumerate(spec.slots)}
        imm_kind = {name: kind for name, kind, _ in IMM_FIELDS[op]}
        operands: list[AccessPattern | None] = [None] * len(spec.slots)
        imms: dict[str, object] = {}
        waits: tuple[tuple[str, int], ...] = ()
        signals: tuple[tuple[str, int], ...] = ()
        seen: set[str] = set()
        while True:
            if ln.pos < len(ln.text) and not ln.text[ln.pos].isspace():
                raise ln.error(f"expected white space between fields, found {ln.found()}")
            if ln.at_end():
                break
            kpos = ln.pos
            km = KEY.match(ln.text, ln.pos)
            key = km.group(0) if km else ""
            if km is None or not key or not ln.text.startswith("=", km.end()):
                raise ln.error(f"expected a field 'name=value' of {op.name}, found {ln.found()}")
            if key not in slot_index and key not in imm_kind and key not in ("wait", "signal"):
                allowed = [*slot_index, *imm_kind, "wait", "signal"]
                raise ln.error(f"{op.name} has no field '{key}' (expected one of {', '.join(allowed)})", kpos)
            if key in seen:
                raise ln.error(f"field '{key}' given twice", kpos)
            seen.add(key)
            ln.pos = km.end() + 1
            if key in slot_index:
                operands[slot_index[key]] = self.operand(ln, spec, key)
            elif key == "wait":
                waits = self.sync_list(ln, key)
            elif key == "signal":
                signals = self.sync_list(ln, key)
            else:
                imms[key] = self.imm(ln, spec, imm_kind[key], key)
        for s, ap in zip(spec.slots, operands):
            if ap is None and not s.optional:
                raise ln.error(f"{op.name}: missing operand '{s.name}='")
        for im in spec.imms:
            if im.default is None and im.name not in imms:
                raise ln.error(f"{op.name}: missing immediate '{im.name}='")
        core, engine, queue = self.stream
        try:
            ins = Instruction(op, tuple(operands), imms, engine, core, queue, waits, signals)
            p.append(ins)
        except _CONVERT_ERRORS as e:
            msg = re.sub(r"^instruction \d+: ", "", str(e))
            raise ln.error(msg, opos) from None
        self.lines.append(ln.lineno)


def parse_with_lines(text: str, filename: str = "<string>") -> tuple[Program, list[int]]:
    """Parse assembly text; also return the 1-based source line of every instruction."""
    if not isinstance(text, str):
        raise AsmParseError(f"expected text, got {type(text).__name__}", filename, 0, 0)
    return _Parser(text, filename).run()


def parse(text: str, filename: str = "<string>") -> Program:
    """Parse assembly text into a Program; errors raise AsmParseError naming ``filename:line:column``."""
    return parse_with_lines(text, filename)[0]


def parse_file(path: str | Path) -> Program:
    """Parse the ``.s`` file at ``path``."""
    return parse_file_with_lines(path)[0]


def parse_file_with_lines(path: str | Path) -> tuple[Program, list[int]]:
    """Parse the ``.s`` file at ``path``, returning the program and each instruction's source line."""
    from infsim.userfiles import MAX_PROGRAM_BYTES, read_bytes

    path = Path(path)
    try:
        data = read_bytes(path, "assembly file", MAX_PROGRAM_BYTES, IsaError)  # no devices, bounded
    except IsaError as e:
        raise AsmParseError(f"cannot read: {str(e).removeprefix(f'{path}: ')}", str(path), 0, 0) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AsmParseError(f"not UTF-8 text ({e.reason} at byte {e.start})", str(path), 0, 0) from None
    return parse_with_lines(text, str(path))

