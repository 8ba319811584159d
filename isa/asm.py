"""Text assembly (``.s``): the printer and the parser (grammar in ``docs/asm-grammar.md``).

:func:`print_program` writes the canonical text of a :class:`~infsim.isa.program.Program`;
:func:`parse` reads text back, so that ``parse(print_program(p)) == p`` for every program whose
names are printable identifiers. Every problem in the text, including an operand or immediate that
the ISA refuses (out-of-range field, engine that cannot run the opcode, undeclared name), raises
:class:`~infsim.isa.errors.AsmParseError` naming ``file:line:column`` and what was expected.

Left out: macros, labels, expressions and include files (programs are generated, not written by
hand at scale); the parser stops at the first error rather than recovering to report several.
Chip-dependent legality (sizes, bounds, dtypes per engine) is validation's job (``isa/validate.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

from .dtypes import DType
from .errors import AsmParseError, IsaError
from .opcodes import MAX_FREE_DIMS, MAX_SIGNALS, MAX_WAITS, OPSPECS, Engine, Op, OpSpec, Space
from .operand import AccessPattern
from .program import ENUM_KINDS, IMM_FIELDS, INTS_UNUSED, Instruction, Program, TensorKind

__all__ = ["print_program", "parse", "parse_with_lines", "parse_file", "parse_file_with_lines", "format_operand"]

# ---------------------------------------------------------------------------------------------------
# printer
# ---------------------------------------------------------------------------------------------------

_SEMS_PER_LINE = 16


def _fmt_float(v: float) -> str:
    return repr(float(v))


def _fmt_dims(strides: list[int], sizes: list[int], nd: int) -> str:
    return "".join(f" ({strides[k]},{sizes[k]})" for k in range(nd))


def format_operand(ap: AccessPattern) -> str:
    """Canonical text of one access pattern (as it appears after ``slot=``)."""
    dims = "".join(f" ({st},{sz})" for st, sz in ap.dims)
    if ap.space == Space.hbm:
        return f"hbm.{ap.tensor}[{ap.partitions}@{ap.partition_stride} +{ap.offset}{dims} {ap.dtype.name}]"
    end = ap.partition_start + ap.partitions
    return f"{ap.space.name}[{ap.partition_start}:{end} +{ap.offset}{dims} {ap.dtype.name}]"


def _ap_texts(p: Program) -> list[str]:
    aps = p.aps
    tnames = list(p.tensors)
    out = []
    cols = [aps[f].tolist() for f in ("space", "dtype", "ndims", "pstart", "pcount", "tensor", "pstride", "offset",
                                      "strides", "sizes")]
    for sp, dt, nd, ps, pc, tid, pst, off, strides, sizes in zip(*cols):
        dims = _fmt_dims(strides, sizes, nd)
        dname = DType(dt).name
        if sp == Space.hbm:
            out.append(f"hbm.{tnames[tid]}[{pc}@{pst} +{off}{dims} {dname}]")
        else:
            out.append(f"{Space(sp).name}[{ps}:{ps + pc} +{off}{dims} {dname}]")
    return out


def _stream_name(core: int, engine: int, queue: int) -> str:
    e = Engine(engine)
    if queue or e in (Engine.dma, Engine.cc):
        return f"c{core}.{e.name}{queue}"
    return f"c{core}.{e.name}"


def print_program(p: Program) -> str:
    """The canonical text of ``p``: ``.program``, tensors, semaphores, groups, then the instructions."""
    lines = [f".program cores={p.num_cores} cores_per_chip={p.cores_per_chip}"]
    for t in p.tensors.values():
        shape = ",".join(str(s) for s in t.shape)
        chip = f" chip={t.chip}" if t.chip else ""
        lines.append(f".tensor {t.name} {t.dtype.name}[{shape}] {t.kind.name}{chip}")
    sems = p.semaphores
    for k in range(0, len(sems), _SEMS_PER_LINE):
        lines.append(".sem " + ", ".join(sems[k : k + _SEMS_PER_LINE]))
    for g, members in p.groups.items():
        lines.append(f".group {g} " + ",".join(str(c) for c in members))

    ins = p.instr
    if len(ins):
        apt = _ap_texts(p)
        gnames = list(p.groups)
        c = {f: ins[f].tolist() for f in ins.dtype.names}  # type: ignore[union-attr]
        # per-opcode format: slot names and (imm name, kind, field) triples
        fmts = {op: ([s.name for s in spec.slots], IMM_FIELDS[op]) for op, spec in OPSPECS.items()}
        enum_by_kind = ENUM_KINDS
        stream = None
        for i in range(len(ins)):
            key = (c["core"][i], c["engine"][i], c["queue"][i])
            if key != stream:
                lines.append(".stream " + _stream_name(*key))
                stream = key
            op = Op(c["op"][i])
            slots, imms = fmts[op]
            parts = [op.name]
            opnd = c["opnd"][i]
            for k, sname in enumerate(slots):
                if opnd[k] >= 0:
                    parts.append(f"{sname}={apt[opnd[k]]}")
            for name, kind, f in imms:
                if kind in enum_by_kind:
                    v = enum_by_kind[kind](c[f][i]).name
                elif kind == "sem":
                    v = sems[c[f][i]]
                elif kind == "group":
                    v = gnames[c[f][i]]
                elif kind == "bool":
                    v = "true" if (c["flags"][i] >> int(f[4:])) & 1 else "false"
                elif kind == "ints":
                    vals = [x for x in c[f][i] if x != INTS_UNUSED]
                    v = ",".join(str(x) for x in vals) if vals else "()"
                elif kind == "int":
                    v = str(c[f][i])
                else:
                    v = _fmt_float(c[f][i])
                parts.append(f"{name}={v}")
            ws = [f"{sems[s]}>={v}" for s, v in zip(c["wsem"][i], c["wval"][i]) if s >= 0]
            if ws:
                parts.append("wait=" + ",".join(ws))
            ss = [f"{sems[s]}+{v}" for s, v in zip(c["ssem"][i], c["sval"][i]) if s >= 0]
            if ss:
                parts.append("signal=" + ",".join(ss))
            lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------------

_WS = re.compile(r"[ \t\r\f\v]*")
_NAME = re.compile(r"[\w.]+")
_KEY = re.compile(r"[A-Za-z_]\w*")
_INT = re.compile(r"[-+]?\d+")
_UINT = re.compile(r"\d+")
_VALUE = re.compile(r"\S+")
_STREAM = re.compile(r"c(\d+)\.([a-z]+)(\d*)")
_FLOAT = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|infinity|nan)", re.IGNORECASE)
_DIM = re.compile(r"\([ \t]*([-+]?\d+)[ \t]*,[ \t]*(\d+)[ \t]*\)")
_WAIT = re.compile(r"([\w.]+)>=(\d+)")
_SIGNAL = re.compile(r"([\w.]+)\+(\d+)")
# fast path for canonical operands
_FAST_ONCHIP = re.compile(r"(sbuf|psum)\[(\d+):(\d+) \+(\d+)((?: \([-+]?\d+,\d+\))*) (\w+)\]")
_FAST_HBM = re.compile(r"hbm\.([\w.]+)\[(\d+)@([-+]?\d+) \+(\d+)((?: \([-+]?\d+,\d+\))*) (\w+)\]")
_FAST_DIM = re.compile(r"\(([-+]?\d+),(\d+)\)")

_DTYPE_NAMES = ", ".join(d.name for d in DType)
_CONVERT_ERRORS = (IsaError, ValueError, OverflowError, TypeError, KeyError, IndexError)


class _Line:
    """Cursor over one source line, producing AsmParseErrors at the right column."""

    __slots__ = ("text", "pos", "file", "lineno")

    def __init__(self, text: str, file: str, lineno: int):
        self.text = text
        self.pos = 0
        self.file = file
        self.lineno = lineno

    def error(self, message: str, pos: int | None = None) -> AsmParseError:
        col = (self.pos if pos is None else pos) + 1
        return AsmParseError(message, self.file, self.lineno, col)

    def ws(self) -> None:
        self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def at_end(self) -> bool:
        self.ws()
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def found(self) -> str:
        if self.pos >= len(self.text):
            return "end of line"
        m = _VALUE.match(self.text, self.pos)
        tok = m.group(0) if m else self.text[self.pos]
        if len(tok) > 20:
            tok = tok[:20] + "..."
        return f"'{tok}'"

    def expect(self, s: str, what: str | None = None) -> None:
        if not self.text.startswith(s, self.pos):
            raise self.error(f"expected {what or repr(s)}, found {self.found()}")
        self.pos += len(s)

    def match(self, rx: re.Pattern[str], what: str) -> re.Match[str]:
        m = rx.match(self.text, self.pos)
        if m is None or m.end() == self.pos:
            raise self.error(f"expected {what}, found {self.found()}")
        self.pos = m.end()
        return m

    def int_(self, what: str, signed: bool = False) -> int:
        start = self.pos
        m = self.match(_INT if signed else _UINT, what)
        try:
            return int(m.group(0))
        except ValueError:
            raise self.error(f"{what}: number too long", start) from None


class _Parser:
    def __init__(self, text: str, filename: str):
        self.text = text
        self.file = filename
        self.program: Program | None = None
        self.lines: list[int] = []
        self.stream: tuple[int, Engine, int] | None = None
        self.ap_cache: dict[str, AccessPattern] = {}

    # ---- helpers -----------------------------------------------------------------------------
    def prog(self, ln: _Line) -> Program:
        if self.program is None:
            self.program = Program()
        return self.program

    def run(self) -> tuple[Program, list[int]]:
        for lineno, raw in enumerate(self.text.split("\n"), start=1):
            h = raw.find("#")
            body = raw if h < 0 else raw[:h]
            ln = _Line(body, self.file, lineno)
            if ln.at_end():
                continue
            if ln.peek() == ".":
                self.directive(ln)
            else:
                self.instruction(ln)
        return self.prog(_Line("", self.file, 0)), self.lines

    # ---- directives --------------------------------------------------------------------------
    def directive(self, ln: _Line) -> None:
        start = ln.pos
        ln.pos += 1
        m = _KEY.match(ln.text, ln.pos)
        name = m.group(0) if m else ""
        handler = {
            "program": self.d_program, "tensor": self.d_tensor, "sem": self.d_sem, "group": self.d_group,
            "stream": self.d_stream,
        }.get(name)
        if handler is None:
            raise ln.error(f"unknown directive {ln.found() if not name else repr('.' + name)} "
                           "(expected .program, .tensor, .sem, .group or .stream)", start)
        ln.pos = m.end()  # type: ignore[union-attr]
        if ln.pos < len(ln.text) and not ln.text[ln.pos].isspace():
            raise ln.error(f"unknown directive '.{name}{ln.text[ln.pos]}...'", start)
        handler(ln, start)
        if not ln.at_end():
            raise ln.error(f"expected end of line, found {ln.found()}")

    def d_program(self, ln: _Line, start: int) -> None:
        if self.program is not None:
            raise ln.error(".program must come first and only once", start)
        vals = {"cores": 1, "cores_per_chip": 1}
        seen: set[str] = set()
        while not ln.at_end():
            kpos = ln.pos
            key = ln.match(_KEY, "'cores=N' or 'cores_per_chip=N'").group(0)
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

    def d_tensor(self, ln: _Line, start: int) -> None:
        p = self.prog(ln)
        ln.ws()
        npos = ln.pos
        name = ln.match(_NAME, "a tensor name").group(0)
        ln.ws()
        dpos = ln.pos
        dt = self.dtype(ln, _KEY.match(ln.text, ln.pos), dpos)
        ln.expect("[", "'[' and the tensor shape")
        shape = [ln.int_("a dimension size")]
        while ln.peek() == ",":
            ln.pos += 1
            shape.append(ln.int_("a dimension size"))
        ln.expect("]", "',' or ']'")
        ln.ws()
        kpos = ln.pos
        kind_m = ln.match(_KEY, "a tensor kind (input, weight, output or scratch)")
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

    def d_sem(self, ln: _Line, start: int) -> None:
        p = self.prog(ln)
        while True:
            ln.ws()
            npos = ln.pos
            name = ln.match(_NAME, "a semaphore name").group(0)
            try:
                p.add_semaphore(name)
            except _CONVERT_ERRORS as e:
                raise ln.error(str(e), npos) from None
            ln.ws()
            if ln.peek() != ",":
                return
            ln.pos += 1

    def d_group(self, ln: _Line, start: int) -> None:
        p = self.prog(ln)
        ln.ws()
        npos = ln.pos
        name = ln.match(_NAME, "a group name").group(0)
        ln.ws()
        cores = [ln.int_("a core number")]
        while ln.peek() == ",":
            ln.pos += 1
            cores.append(ln.int_("a core number"))
        try:
            p.add_group(name, cores)
        except _CONVERT_ERRORS as e:
            raise ln.error(str(e), npos) from None

    def d_stream(self, ln: _Line, start: int) -> None:
        self.prog(ln)
        ln.ws()
        spos = ln.pos
        m = ln.match(_STREAM, "a stream 'cC.ENGINE[Q]' such as c0.tensor or c0.dma1")
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
    def dtype(self, ln: _Line, m: re.Match[str] | None, pos: int) -> DType:
        name = m.group(0) if m else ""
        if name not in DType.__members__:
            raise ln.error(f"expected a dtype ({_DTYPE_NAMES}), found {ln.found()}", pos)
        ln.pos = m.end()  # type: ignore[union-attr]
        return DType[name]

    def operand(self, ln: _Line, spec: OpSpec, slot: str) -> AccessPattern:
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
        m = _FAST_ONCHIP.match(text, start) or _FAST_HBM.match(text, start)
        if m is not None:
            s = m.group(0)
            ap = self.ap_cache.get(s)
            if ap is None:
                ap = self.operand_slow(_Line(text, ln.file, ln.lineno), start)
                self.ap_cache[s] = ap
            ln.pos = m.end()
            return ap
        return self.operand_slow(ln, start)

    def operand_slow(self, ln: _Line, start: int) -> AccessPattern:
        ln.pos = start
        m = _KEY.match(ln.text, ln.pos)
        sp = m.group(0) if m else ""
        tensor = None
        if sp in ("sbuf", "psum"):
            ln.pos = m.end()  # type: ignore[union-attr]
            space = Space[sp]
        elif sp == "hbm":
            ln.pos = m.end()  # type: ignore[union-attr]
            ln.expect(".", "'.' and a tensor name after 'hbm'")
            tpos = ln.pos
            tensor = ln.match(_NAME, "a tensor name").group(0)
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
        dims = []
        while True:
            ln.ws()
            if ln.peek() != "(":
                break
            dpos = ln.pos
            dm = _DIM.match(ln.text, ln.pos)
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
        dt = self.dtype(ln, _KEY.match(ln.text, ln.pos), dpos)
        ln.ws()
        ln.expect("]", "']' closing the operand")
        try:
            return AccessPattern(space, dt, pstart, rows, offset, tuple(dims), tensor, pstride)
        except _CONVERT_ERRORS as e:
            raise ln.error(str(e), start) from None

    def imm(self, ln: _Line, spec: OpSpec, kind: str, name: str) -> object:
        vpos = ln.pos
        m = _VALUE.match(ln.text, ln.pos)
        tok = m.group(0) if m else ""
        if not tok:
            raise ln.error(f"expected a value for '{name}', found {ln.found()}")
        ln.pos = m.end()  # type: ignore[union-attr]
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
            if not _INT.fullmatch(tok):
                raise ln.error(f"'{name}': expected an integer, found '{tok}'", vpos)
            try:
                return int(tok)
            except ValueError:
                raise ln.error(f"'{name}': integer too long", vpos) from None
        if kind == "float":
            if not _FLOAT.fullmatch(tok):
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
            if len(items) > MAX_FREE_DIMS or not all(_INT.fullmatch(x) for x in items):
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

    def sync_list(self, ln: _Line, key: str) -> tuple[tuple[str, int], ...]:
        rx, form, limit = (_WAIT, "SEM>=VALUE", MAX_WAITS) if key == "wait" else (_SIGNAL, "SEM+VALUE", MAX_SIGNALS)
        p = self.prog(ln)
        out = []
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
    def instruction(self, ln: _Line) -> None:
        p = self.prog(ln)
        opos = ln.pos
        m = _KEY.match(ln.text, ln.pos)
        opname = m.group(0) if m else ""
        if opname not in Op.__members__:
            raise ln.error(f"expected an opcode or a directive, found {ln.found()} (opcodes: "
                           f"{', '.join(o.name for o in Op)})")
        ln.pos = m.end()  # type: ignore[union-attr]
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
            km = _KEY.match(ln.text, ln.pos)
            key = km.group(0) if km else ""
            if not key or not ln.text.startswith("=", km.end()):  # type: ignore[union-attr]
                raise ln.error(f"expected a field 'name=value' of {op.name}, found {ln.found()}")
            if key not in slot_index and key not in imm_kind and key not in ("wait", "signal"):
                allowed = [*slot_index, *imm_kind, "wait", "signal"]
                raise ln.error(f"{op.name} has no field '{key}' (expected one of {', '.join(allowed)})", kpos)
            if key in seen:
                raise ln.error(f"field '{key}' given twice", kpos)
            seen.add(key)
            ln.pos = km.end() + 1  # type: ignore[union-attr]
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
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise AsmParseError(f"not UTF-8 text ({e.reason} at byte {e.start})", str(path), 0, 0) from None
    return parse_with_lines(text, str(path))

