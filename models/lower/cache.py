"""Lowered programs cached on disk, so that a sweep over rates, bandwidths and latencies lowers once.

A lowered step depends on the model, the workload, the chip fields the lowering reads
(:data:`~.plan.LOWERING_CHIP_FIELDS`: SBUF/PSUM geometry, array shape, DMA engines and queues, cores per
chip, HBM capacity) and the lowering code itself. :func:`cache_key` hashes exactly these (the code as the
bytes of the lowering, op-graph, model-spec and ISA source files), so two chips that differ only in clock
rates, bandwidths, latencies or energies share an entry, and an edited lowering never reads a stale one.

:func:`lower_cached` returns the cached :class:`~.transformer.Lowered` (its ``chip`` the caller's) or lowers
and stores it (``wait=False``: the file is written by a background thread, so the time writing a 7B decode
step's ~70 MB takes, 0.03-0.2 s measured and mostly system time, overlaps what the caller does next;
:func:`wait_for_stores` joins the writers, and so do the interpreter's exit and every ``fork``, so no writer
thread is alive in a forked sweep worker). Only validated programs are stored (:func:`~.transformer.lower`
checks the program against the chip before returning it), and the key covers every chip field the ISA
validator reads and the validator's own source, so a hit is returned without validating it again. An entry is
one file, ``<key>.lowered``: a magic naming the format (:data:`FORMAT`), a small pickled header (the tables'
row counts and record dtypes, and the pickled rest: plain values and small numpy arrays, taken when the store
starts), then the instruction and AP tables' raw bytes, which a hit reads with ``readinto`` straight into
fresh arrays (one copy; a pickle copied them twice: ~25 ms more on a 7B decode step, mostly page faults).
It is written to a temporary file in the cache directory and renamed into place (``os.replace``, atomic on one
file system), so concurrent sweep workers never see a partial file; two workers that miss at once both lower
and write identical contents. An entry that cannot be read (missing, another format, other record dtypes, a
size that does not match its header, a header that does not unpickle) is treated as missing.

Location: ``cache_dir`` argument, else the ``INFSIM_LOWERING_CACHE`` environment variable (``off`` disables
caching), else ``$XDG_CACHE_HOME/infsim/lowered`` (``~/.cache/infsim/lowered``); the CLI's
``--lowering-cache DIR|off`` sets the variable.

A background write reads the program's instruction and AP tables while the caller goes on: they must not be
modified in place meanwhile (they never are: :attr:`Program.instr` and :attr:`Program.aps` are read-only by
contract, and appending writes past their end or into a new table); everything else is pickled before
:func:`lower_cached` returns. A write that fails leaves no file (the step is simply not cached: an ``OSError``
silently, anything else with a warning); a process killed while it writes leaves its temporary file behind,
as a process killed during a waited write does (never a partial entry).

Left out: eviction (entries stay until the directory is deleted; a Llama-2-7B decode step is ~70 MB).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import pickle
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from infsim.config.schema import ChipConfig
from infsim.isa import DType, Program
from infsim.isa.program import AP_DTYPE, INSTR_DTYPE, TensorKind

from ..graph import Workload, build_graph
from ..spec import ModelSpec
from .plan import lowering_chip_fields
from .transformer import Lowered, lower

#: environment variable naming the cache directory (``off``: no caching)
ENV = "INFSIM_LOWERING_CACHE"
#: bump when the entry layout changes (the source hash covers the code, not this file's format)
FORMAT = 3

_log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    """SHA-256 of the source files a lowered program depends on (lowering, op graph, model spec, ISA)."""
    import infsim.isa as isa_pkg

    models = Path(__file__).resolve().parents[1]
    files = sorted(models.joinpath("lower").glob("*.py")) + [models / "graph.py", models / "spec.py"]
    files += sorted(Path(isa_pkg.__file__).resolve().parent.glob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def cache_key(spec: ModelSpec, workload: Workload, chip: ChipConfig) -> str:
    """The cache key of lowering ``spec`` under ``workload`` for ``chip`` (hex SHA-256)."""
    what = {
        "format": FORMAT,
        "code": _code_hash(),
        "model": repr(dataclasses.asdict(spec)),
        "workload": repr(dataclasses.asdict(workload)),
        "chip": lowering_chip_fields(chip),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=repr).encode()).hexdigest()


def cache_dir(path: str | Path | None = None) -> Path | None:
    """The cache directory: ``path``, else ``$INFSIM_LOWERING_CACHE``, else the user cache; ``None`` when
    caching is off (``off`` given or set)."""
    where = str(path) if path is not None else os.environ.get(ENV, "")
    if where.lower() == "off":
        return None
    if where:
        return Path(where).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "infsim" / "lowered"


def _entry(lw: Lowered) -> dict[str, Any]:
    p = lw.program
    return {
        "num_cores": p.num_cores,
        "cores_per_chip": p.cores_per_chip,
        "tensors": [(t.name, int(t.dtype), t.shape, int(t.kind), t.chip) for t in p.tensors.values()],
        "semaphores": list(p.semaphores),
        "groups": list(p.groups.items()),
        "instr": p.instr,
        "aps": p.aps,
        "fields": {
            f.name: getattr(lw, f.name)
            for f in dataclasses.fields(lw)
            if f.name not in ("program", "graph", "spec", "workload", "chip")
        },
    }


def _from_entry(e: dict[str, Any], spec: ModelSpec, workload: Workload, chip: ChipConfig) -> Lowered:
    p = Program(e["num_cores"], e["cores_per_chip"])
    for name, dt, shape, kind, ch in e["tensors"]:
        p.add_tensor(name, DType(dt), shape, TensorKind(kind), ch)
    for s in e["semaphores"]:
        p.add_semaphore(s)
    for g, cores in e["groups"]:
        p.add_group(g, cores)
    p.install_tables(e["instr"], e["aps"], adopt=True)  # (fresh arrays from the unpickler)
    return Lowered(program=p, graph=build_graph(spec, workload), spec=spec, workload=workload, chip=chip,
                   **e["fields"])


#: first bytes of an entry (format :data:`FORMAT`); the header's length follows as a little-endian u64
_MAGIC = b"infsimL%d" % FORMAT
_HEAD = struct.Struct("<8sQ")
#: the tables start at a multiple of this many bytes from the file's start
_ALIGN_BYTES = 64


def _read_exactly(f: io.FileIO, buf: memoryview) -> None:
    """Fill ``buf`` from ``f`` (``readinto`` straight into the array: the bytes are copied once);
    ``ValueError`` if the file ends first."""
    got = 0
    while got < len(buf):
        k = f.readinto(buf[got:])
        if not k:
            raise ValueError("truncated lowering cache entry")
        got += k


def _table(f: io.FileIO, rows: int, dtype: np.dtype[Any]) -> np.ndarray:
    """The next ``rows`` records of ``dtype`` from ``f``, in a fresh (writable) array."""
    table = np.empty(rows, dtype)
    _read_exactly(f, table.view(np.uint8).data)
    return table


def load(path: Path, spec: ModelSpec, workload: Workload, chip: ChipConfig) -> Lowered | None:
    """The entry at ``path`` as a :class:`Lowered` for ``chip``, or ``None`` if missing or unreadable."""
    try:
        with open(path, "rb", buffering=0) as f:
            size_bytes = os.fstat(f.fileno()).st_size
            magic, head_len = _HEAD.unpack(f.read(_HEAD.size))
            if magic != _MAGIC or head_len > size_bytes:
                raise ValueError("not a lowering cache entry of this format")
            head = pickle.loads(f.read(head_len))
            (n, instr_dtype), (naps, aps_dtype) = head["instr"], head["aps"]
            if instr_dtype != INSTR_DTYPE or aps_dtype != AP_DTYPE or type(n) is not int or type(naps) is not int:
                raise ValueError("lowering cache entry with foreign tables")
            start = _aligned(_HEAD.size + head_len)
            if min(n, naps) < 0 or size_bytes != start + n * INSTR_DTYPE.itemsize + naps * AP_DTYPE.itemsize:
                raise ValueError("truncated lowering cache entry")
            f.seek(start)
            instr = _table(f, n, INSTR_DTYPE)
            aps = _table(f, naps, AP_DTYPE)
        e = pickle.loads(head["rest"])
        e["instr"], e["aps"] = instr, aps
        return _from_entry(e, spec, workload, chip)
    except FileNotFoundError:
        return None
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError, AttributeError,
            struct.error):
        return None  # a corrupt, foreign or truncated file: lower again (and overwrite it)


def _aligned(offset_bytes: int) -> int:
    return -(-offset_bytes // _ALIGN_BYTES) * _ALIGN_BYTES


def _snapshot(lw: Lowered) -> dict[str, Any]:
    """What :func:`_write` writes: the instruction and AP tables (referenced) and everything else pickled
    now (so that later changes to the :class:`Lowered` cannot reach a background write)."""
    e = _entry(lw)
    instr, aps = np.ascontiguousarray(e.pop("instr")), np.ascontiguousarray(e.pop("aps"))
    head = {"instr": (len(instr), instr.dtype), "aps": (len(aps), aps.dtype),
            "rest": pickle.dumps(e, protocol=pickle.HIGHEST_PROTOCOL)}
    return {"instr": instr, "aps": aps, "head": pickle.dumps(head, protocol=pickle.HIGHEST_PROTOCOL)}


def _write(path: Path, snap: dict[str, Any]) -> None:
    """Write ``snap`` to ``path`` atomically (temporary file in the same directory, then rename): the magic
    and the header's length, the pickled header, padding to :data:`_ALIGN_BYTES`, the instruction table's
    bytes, the AP table's bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            head = snap["head"]
            f.write(_HEAD.pack(_MAGIC, len(head)))
            f.write(head)
            f.write(bytes(_aligned(_HEAD.size + len(head)) - _HEAD.size - len(head)))
            f.write(snap["instr"].view(np.uint8).data)
            f.write(snap["aps"].view(np.uint8).data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def store(path: Path, lw: Lowered) -> None:
    """Write ``lw`` to ``path`` atomically (temporary file in the same directory, then rename)."""
    _write(path, _snapshot(lw))


_pending: list[tuple[Path, threading.Thread]] = []  # background writers and their entries
_pending_lock = threading.Lock()


def _store_in_background(path: Path, lw: Lowered) -> None:
    """:func:`store` in a (non-daemon) thread; errors mean "not cached"."""
    snap = _snapshot(lw)

    def work() -> None:
        try:
            _write(path, snap)
        except OSError:
            pass  # read-only or full: the result is still correct, only not cached
        except Exception as e:  # noqa: BLE001 - a cache that cannot be written never fails a run
            _log.warning("lowering cache entry %s not written: %s: %s", path, type(e).__name__, e)
        finally:
            with _pending_lock:
                _pending.remove(me)

    t = threading.Thread(target=work, name=f"infsim-lowering-cache {path.name[:12]}")
    me = (path, t)
    with _pending_lock:
        _pending.append(me)
    t.start()


def wait_for_stores(path: Path | None = None) -> None:
    """Wait for the background writes (``lower_cached(..., wait=False)``) of ``path`` (default: all) to end."""
    with _pending_lock:
        threads = [t for p, t in _pending if path is None or p == path]
    for t in threads:
        if t is not threading.current_thread():
            t.join()


os.register_at_fork(before=wait_for_stores)  # no writer thread is ever copied half-way into a forked child


def lower_cached(
    spec: ModelSpec, workload: Workload, chip: ChipConfig, *, cache: str | Path | None = None, wait: bool = True
) -> Lowered:
    """:func:`~.transformer.lower` through the on-disk cache (``cache``: directory or ``off``; default
    from the environment, see the module docstring). A cache that cannot be written is skipped.
    ``wait=False``: a miss is stored by a background thread (see the module docstring); the program's
    tables must not be modified in place until it ends (:func:`wait_for_stores`)."""
    where = cache_dir(cache)
    if where is None:
        return lower(spec, workload, chip)
    path = where / f"{cache_key(spec, workload, chip)}.lowered"
    wait_for_stores(path)  # this process's own write of the entry, if one is under way
    hit = load(path, spec, workload, chip)
    if hit is not None:
        return hit
    lw = lower(spec, workload, chip)
    if not wait:
        _store_in_background(path, lw)
        return lw
    try:
        store(path, lw)
    except OSError:
        pass  # read-only or full: the result is still correct, only not cached
    return lw
