"""Binary encoding of programs (``.bin``): fixed-width little-endian records, as held in memory.

Layout::

    b"INFSIMB1"                       8 bytes magic
    u32 header_len                    little-endian
    header                            header_len bytes of UTF-8 JSON: format version, num_cores,
                                      cores_per_chip, tensors, semaphores, groups, the record counts and
                                      the numpy ``descr`` of both record types (a self-check)
    AP table                          num_aps x AP_DTYPE records (isa/records.py)
    instruction table                 num_instructions x INSTR_DTYPE records

``decode`` refuses wrong magic, truncated or oversized input, a header that does not parse or
describes a different record layout, and every record field out of range (enum values, operand,
semaphore, group and tensor indices, free-dimension count, unused fields not in their canonical
state), naming the record and field. Building a Program already refuses values the fields cannot
hold (:class:`~infsim.isa.errors.OperandError`), so ``encode`` never truncates.

Left out: compression and repeat blocks (a 1M-instruction program is ~110 MB raw; gzip it if needed),
and any compatibility with other format versions.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .dtypes import DType
from .errors import EncodingError, IsaError
from .opcodes import MAX_FREE_DIMS, MAX_OPERANDS, OPSPECS, Engine, Op, Space
from .program import Program, TensorKind
from .records import AP_DTYPE, ENUM_KINDS, IMM_FIELDS, INSTR_DTYPE, INTS_UNUSED

__all__ = ["MAGIC", "VERSION", "encode", "decode", "save", "load"]

MAGIC = b"INFSIMB1"
VERSION = 1
_HDR_LEN = struct.Struct("<I")
_MAX_HEADER = 1 << 30


def _descr(dt: np.dtype) -> list[Any]:
    return json.loads(json.dumps(dt.descr))


def encode(p: Program) -> bytes:
    """The binary encoding of ``p``."""
    header = {
        "version": VERSION,
        "num_cores": p.num_cores,
        "cores_per_chip": p.cores_per_chip,
        "tensors": [[t.name, t.dtype.name, list(t.shape), t.kind.name, t.chip] for t in p.tensors.values()],
        "semaphores": list(p.semaphores),
        "groups": [[g, list(m)] for g, m in p.groups.items()],
        "num_aps": len(p.aps),
        "num_instructions": len(p),
        "ap_descr": _descr(AP_DTYPE),
        "instr_descr": _descr(INSTR_DTYPE),
    }
    hdr = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return b"".join([MAGIC, _HDR_LEN.pack(len(hdr)), hdr, p.aps.tobytes(), p.instr.tobytes()])


def save(p: Program, path: str | Path) -> None:
    """Write the binary encoding of ``p`` to ``path``."""
    Path(path).write_bytes(encode(p))


def load(path: str | Path) -> Program:
    """Read a program written by :func:`save`."""
    from infsim.userfiles import MAX_PROGRAM_BYTES, read_bytes

    data = read_bytes(path, "binary program", MAX_PROGRAM_BYTES, EncodingError)  # no devices, bounded
    try:
        return decode(data)
    except EncodingError as e:
        raise EncodingError(f"{path}: {e}") from None


# ---------------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------------

def _int(h: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = h.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not (lo <= v <= hi):
        raise EncodingError(f"header field '{key}': expected an integer in [{lo}, {hi}], got {v!r}")
    return v


def _header(data: bytes) -> tuple[dict[str, Any], int]:
    if len(data) < len(MAGIC):
        raise EncodingError(f"truncated input: {len(data)} bytes, shorter than the magic {MAGIC!r}")
    if data[: len(MAGIC)] != MAGIC:
        raise EncodingError(f"not an infsim program: magic {bytes(data[:len(MAGIC)])!r}, expected {MAGIC!r}")
    pos = len(MAGIC)
    if len(data) < pos + _HDR_LEN.size:
        raise EncodingError("truncated input: header length missing")
    (n,) = _HDR_LEN.unpack_from(data, pos)
    pos += _HDR_LEN.size
    if n > _MAX_HEADER or len(data) < pos + n:
        raise EncodingError(f"truncated input: header of {n} bytes announced, {len(data) - pos} available")
    try:
        h = json.loads(bytes(data[pos : pos + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise EncodingError(f"corrupt header (not JSON): {e}") from None
    if not isinstance(h, dict):
        raise EncodingError("corrupt header: expected a JSON object")
    return h, pos + n


def _build(h: dict[str, Any]) -> Program:
    if h.get("version") != VERSION:
        raise EncodingError(f"header field 'version': {h.get('version')!r}, this build reads version {VERSION}")
    if h.get("ap_descr") != _descr(AP_DTYPE) or h.get("instr_descr") != _descr(INSTR_DTYPE):
        raise EncodingError("header: record layout (ap_descr/instr_descr) differs from this build's")
    p = Program(_int(h, "num_cores", 1, 0xFFFF + 1), _int(h, "cores_per_chip", 1, 0xFFFF + 1))
    try:
        for k, t in enumerate(_list(h, "tensors")):
            if not (isinstance(t, list) and len(t) == 5 and isinstance(t[0], str) and isinstance(t[1], str)
                    and isinstance(t[2], list) and all(isinstance(x, int) and not isinstance(x, bool) for x in t[2])
                    and t[3] in TensorKind.__members__ and isinstance(t[4], int) and not isinstance(t[4], bool)):
                raise EncodingError(f"header field 'tensors[{k}]': expected [name, dtype, shape, kind, chip]")
            p.add_tensor(t[0], t[1], t[2], t[3], t[4])
        for k, s in enumerate(_list(h, "semaphores")):
            if not isinstance(s, str):
                raise EncodingError(f"header field 'semaphores[{k}]': expected a name")
            p.add_semaphore(s)
        for k, g in enumerate(_list(h, "groups")):
            if not (isinstance(g, list) and len(g) == 2 and isinstance(g[0], str) and isinstance(g[1], list)
                    and all(isinstance(x, int) and not isinstance(x, bool) for x in g[1])):
                raise EncodingError(f"header field 'groups[{k}]': expected [name, [cores...]]")
            p.add_group(g[0], g[1])
    except EncodingError:
        raise
    except IsaError as e:
        raise EncodingError(f"header: {e}") from None
    return p


def _list(h: dict[str, Any], key: str) -> list[Any]:
    v = h.get(key)
    if not isinstance(v, list):
        raise EncodingError(f"header field '{key}': expected a list")
    return v


def _first_bad(mask: np.ndarray | np.bool_) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else None


def _refuse(table: str, mask: np.ndarray | np.bool_, field: str, values: np.ndarray, expected: str) -> None:
    i = _first_bad(mask)
    if i is not None:
        v = values[i]
        v = v.tolist() if isinstance(v, np.ndarray) else v.item() if hasattr(v, "item") else v
        raise EncodingError(f"{table} record {i}: field '{field}' value {v} out of range (expected {expected})")


def _check_aps(aps: np.ndarray, ntensors: int) -> None:
    t = "AP"
    sp, nd = aps["space"], aps["ndims"]
    _refuse(t, sp >= len(Space), "space", sp, f"0..{len(Space) - 1}")
    _refuse(t, aps["dtype"] >= len(DType), "dtype", aps["dtype"], f"0..{len(DType) - 1}")
    _refuse(t, nd > MAX_FREE_DIMS, "ndims", nd, f"0..{MAX_FREE_DIMS}")
    _refuse(t, aps["pcount"] < 1, "pcount", aps["pcount"], ">= 1")
    _refuse(t, aps["offset"] < 0, "offset", aps["offset"], ">= 0")
    hbm = sp == Space.hbm
    _refuse(t, hbm & ((aps["tensor"] < 0) | (aps["tensor"] >= ntensors)), "tensor", aps["tensor"],
            f"a tensor index in [0, {ntensors}) for an HBM operand")
    _refuse(t, ~hbm & (aps["tensor"] != -1), "tensor", aps["tensor"], "-1 for an on-chip operand")
    _refuse(t, hbm & (aps["pstart"] != 0), "pstart", aps["pstart"], "0 for an HBM operand")
    _refuse(t, ~hbm & (aps["pstride"] != 0), "pstride", aps["pstride"], "0 for an on-chip operand")
    used = np.arange(MAX_FREE_DIMS)[None, :] < nd[:, None]
    _refuse(t, (used & (aps["sizes"] < 1)).any(axis=1), "sizes", aps["sizes"], ">= 1 within ndims")
    _refuse(t, (~used & ((aps["sizes"] != 0) | (aps["strides"] != 0))).any(axis=1), "strides/sizes",
            aps["sizes"], "0 beyond ndims")


def _check_instr(ins: np.ndarray, naps: int, nsems: int, ngroups: int) -> None:
    t = "instruction"
    op = ins["op"]
    _refuse(t, op >= len(Op), "op", op, f"0..{len(Op) - 1}")
    _refuse(t, ins["engine"] >= len(Engine), "engine", ins["engine"], f"0..{len(Engine) - 1}")
    opnd = ins["opnd"]
    _refuse(t, ((opnd < -1) | (opnd >= naps)).any(axis=1), "opnd", opnd, f"-1 or an AP index in [0, {naps})")
    for name in ("wsem", "ssem"):
        s = ins[name]
        _refuse(t, ((s < -1) | (s >= nsems)).any(axis=1), name, s, f"-1 or a semaphore index in [0, {nsems})")
        _refuse(t, ((s[:, 1:] >= 0) & (s[:, :-1] < 0)).any(axis=1), name, s, "used entries first")
        val = "wval" if name == "wsem" else "sval"
        _refuse(t, ((s < 0) & (ins[val] != 0)).any(axis=1), val, ins[val], "0 where the semaphore is -1")
    for o in np.unique(op).tolist():
        sel = op == o
        spec = OPSPECS[Op(o)]
        allowed = np.zeros(256, bool)
        allowed[[int(e) for e in spec.engines]] = True
        _refuse(t, sel & ~allowed[ins["engine"]], "engine", ins["engine"],
                f"an engine that runs {spec.name}: {', '.join(e.name for e in spec.engines)}")
        for k in range(MAX_OPERANDS):
            if k >= len(spec.slots):
                _refuse(t, sel & (opnd[:, k] != -1), f"opnd[{k}]", opnd[:, k], f"-1 ({spec.name} has "
                        f"{len(spec.slots)} operand slots)")
            elif not spec.slots[k].optional:
                _refuse(t, sel & (opnd[:, k] < 0), f"opnd[{k}]", opnd[:, k],
                        f"an AP index (operand '{spec.slots[k].name}' of {spec.name} is required)")
        fields = IMM_FIELDS[Op(o)]
        used_fields = {f for _, _, f in fields}
        flag_bits = 0
        for name, kind, f in fields:
            if kind == "bool":
                flag_bits |= 1 << int(f[4:])
                continue
            v = ins[f]
            if kind in ENUM_KINDS:
                n = len(ENUM_KINDS[kind])
                _refuse(t, sel & (v >= n), f"{f} ({name})", v, f"a {kind} in 0..{n - 1}")
            elif kind == "sem":
                _refuse(t, sel & ((v < 0) | (v >= nsems)), f"{f} ({name})", v, f"a semaphore index in [0, {nsems})")
            elif kind == "group":
                _refuse(t, sel & ((v < 0) | (v >= ngroups)), f"{f} ({name})", v, f"a group index in [0, {ngroups})")
            elif kind == "ints":
                unused = v == INTS_UNUSED
                _refuse(t, sel & (unused[:, :-1] & ~unused[:, 1:]).any(axis=1), f"{f} ({name})", v,
                        "used entries first")
        for f in ("e0", "e1", "i0", "i1", "f0", "f1"):
            if f not in used_fields:
                _refuse(t, sel & (ins[f] != 0), f, ins[f], f"0 ({spec.name} does not use it)")
        if "ints" not in used_fields:
            _refuse(t, sel & (ins["ints"] != INTS_UNUSED).any(axis=1), "ints", ins["ints"],
                    f"unused ({spec.name} does not use it)")
        _refuse(t, sel & ((ins["flags"] & (~flag_bits & 0xFF)) != 0), "flags", ins["flags"],
                f"only bits {flag_bits:#x} set for {spec.name}")


def decode(data: bytes) -> Program:
    """The Program encoded in ``data``; refuses corrupt input with :class:`EncodingError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodingError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    h, pos = _header(data)
    p = _build(h)
    naps = _int(h, "num_aps", 0, 2**40)
    n = _int(h, "num_instructions", 0, 2**40)
    need = pos + naps * AP_DTYPE.itemsize + n * INSTR_DTYPE.itemsize
    if len(data) != need:
        what = "truncated input" if len(data) < need else "trailing bytes"
        raise EncodingError(f"{what}: {len(data)} bytes, expected {need} for {naps} APs and {n} instructions")
    aps = np.frombuffer(data, AP_DTYPE, naps, pos)
    ins = np.frombuffer(data, INSTR_DTYPE, n, pos + naps * AP_DTYPE.itemsize)
    _check_aps(aps, len(p.tensors))
    _check_instr(ins, naps, len(p.semaphores), len(p.groups))
    p.install_tables(ins, aps)
    return p


