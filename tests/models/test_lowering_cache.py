"""The on-disk cache of lowered programs (infsim.models.lower.cache): a hit gives the program lowering gives,
the key covers exactly the chip fields the lowering reads, bad entries are lowered again, writes are atomic."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from infsim.config import load_chip
from infsim.models.graph import Workload
from infsim.models.lower import lower
from infsim.models.lower.cache import cache_dir, cache_key, lower_cached, wait_for_stores
from infsim.models.lower.cache import load as cache_load
from infsim.models.lower.plan import LOWERING_CHIP_FIELDS
from infsim.models.spec import load_model

CHIP = load_chip("inf2")
SPEC = dataclasses.replace(load_model("llama-2-7b"), layers=2)
WL = Workload.make("decode", 1, 256, tp=2)


def _same(a: Any, b: Any) -> None:
    pa, pb = a.program, b.program
    assert pa.instr.tobytes() == pb.instr.tobytes() and pa.aps.tobytes() == pb.aps.tobytes()
    assert (pa.tensors, pa.semaphores, pa.groups) == (pb.tensors, pb.semaphores, pb.groups)
    assert np.array_equal(a.op_class, b.op_class) and np.array_equal(a.layer, b.layer)
    assert repr(a.plans) == repr(b.plans)  # (LinearPlan compares by identity)
    for f in ("token_chunk", "sbuf_peak_bytes", "ranks", "max_ctx", "nops", "role_off", "role_bytes",
              "replicated_layers"):
        assert getattr(a, f) == getattr(b, f), f


def test_hit_equals_lowering(tmp_path: Path) -> None:
    first = lower_cached(SPEC, WL, CHIP, cache=tmp_path)
    files = list(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".lowered"]
    files[0].touch()
    hit = lower_cached(SPEC, WL, CHIP, cache=tmp_path)
    _same(hit, lower(SPEC, WL, CHIP))
    _same(hit, first)
    assert hit.chip is CHIP
    # the cached program can still be appended to (deduplicating against its AP table)
    n_aps = len(hit.program.aps)
    hit.program.append(hit.program[0])
    assert len(hit.program.aps) == n_aps


def test_key_ignores_rates_not_geometry() -> None:
    k = cache_key(SPEC, WL, CHIP)
    for rate in ("tensor_engine.clock_ghz=2.0", "hbm.bandwidth_gbps=1600", "dma.engine_gbps=50"):
        assert cache_key(SPEC, WL, load_chip("inf2", [rate])) == k, rate
    for geo in ("sbuf.bytes_per_partition=98304", "dma.queues_per_core=8", "psum.banks=4"):
        assert cache_key(SPEC, WL, load_chip("inf2", [geo])) != k, geo
    assert cache_key(SPEC, dataclasses.replace(WL, batch=2), CHIP) != k
    assert cache_key(dataclasses.replace(SPEC, layers=3), WL, CHIP) != k


class _Recorder:
    """Wraps a chip config and records the dotted path of every field read (properties evaluated through
    the recorder, so the fields they read are recorded)."""

    def __init__(self, obj: BaseModel, path: str, seen: set[str]):
        self._obj, self._path, self._seen = obj, path, seen

    def __getattr__(self, name: str) -> Any:
        path = f"{self._path}{name}"
        attr = getattr(type(self._obj), name, None)
        if isinstance(attr, property):
            return attr.fget(self)  # type: ignore[misc]
        value = getattr(self._obj, name)
        if isinstance(value, BaseModel):
            return _Recorder(value, path + ".", self._seen)
        if not callable(value):
            self._seen.add(path)
        return value


@pytest.mark.parametrize("phase,b,c,tp,dtype", [("decode", 2, 300, 2, "int8"), ("prefill", 1, 300, 1, "bf16")])
def test_lowering_reads_only_keyed_chip_fields(phase: str, b: int, c: int, tp: int, dtype: str) -> None:
    seen: set[str] = set()
    wl = Workload.make(phase, b, c, tp=tp, dtype=dtype)
    lower(SPEC, wl, _Recorder(CHIP, "", seen))  # type: ignore[arg-type]
    assert seen - {"name"} <= set(LOWERING_CHIP_FIELDS)
    assert "sbuf.bytes_per_partition" in seen  # the recorder sees the reads


def test_corrupt_entry_is_lowered_again(tmp_path: Path) -> None:
    lower_cached(SPEC, WL, CHIP, cache=tmp_path)
    (f,) = tmp_path.iterdir()
    f.write_bytes(b"not a pickle")
    _same(lower_cached(SPEC, WL, CHIP, cache=tmp_path), lower(SPEC, WL, CHIP))
    assert f.stat().st_size > 100  # rewritten


@pytest.mark.parametrize("damage", ["truncated", "longer", "old format", "huge header", "empty"])
def test_damaged_entry_is_lowered_again(tmp_path: Path, damage: str) -> None:
    """An entry cut short (in its tables or its header), grown, of another format or empty is a miss."""
    lower_cached(SPEC, WL, CHIP, cache=tmp_path)
    (f,) = tmp_path.iterdir()
    good = f.read_bytes()
    bad = {"truncated": good[:-1], "longer": good + b"\0", "old format": b"infsimL2" + good[8:],
           "huge header": good[:8] + (1 << 62).to_bytes(8, "little") + good[16:], "empty": b""}[damage]
    f.write_bytes(bad)
    assert cache_load(f, SPEC, WL, CHIP) is None
    _same(lower_cached(SPEC, WL, CHIP, cache=tmp_path), lower(SPEC, WL, CHIP))
    assert f.read_bytes() == good  # rewritten
    hit = cache_load(f, SPEC, WL, CHIP)
    assert hit is not None and hit.program.instr.flags.writeable and hit.program.aps.flags.writeable


def test_off_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFSIM_LOWERING_CACHE", "off")
    assert cache_dir() is None
    lower_cached(SPEC, WL, CHIP)
    monkeypatch.setenv("INFSIM_LOWERING_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    lower_cached(SPEC, WL, CHIP)
    assert len(list((tmp_path / "c").glob("*.lowered"))) == 1


def test_concurrent_writers_never_expose_partial_files(tmp_path: Path) -> None:
    """Several writers of one key at once: every reader sees a complete entry, no temporary file is left."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                lw = lower_cached(SPEC, WL, CHIP, cache=tmp_path)
                assert len(lw.program) > 0
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [f.suffix for f in tmp_path.iterdir()] == [".lowered"]


def test_background_store(tmp_path: Path) -> None:
    """``wait=False``: the entry appears once the writer ends (wait_for_stores), equal to a waited store;
    a second call in the same process waits for the write and hits; a fork waits for it too, so no writer
    thread is copied into the child."""
    import os

    first = lower_cached(SPEC, WL, CHIP, cache=tmp_path / "bg", wait=False)
    pid = os.fork()
    if pid == 0:  # the child: the write ended before the fork, and no writer thread came along
        alive = [t for t in threading.enumerate() if t.name.startswith("infsim-lowering-cache")]
        os._exit(0 if not alive and len(list((tmp_path / "bg").glob("*.lowered"))) == 1 else 1)
    assert os.waitpid(pid, 0)[1] == 0
    wait_for_stores()
    assert [f.suffix for f in (tmp_path / "bg").iterdir()] == [".lowered"]
    hit = lower_cached(SPEC, WL, CHIP, cache=tmp_path / "bg", wait=False)
    _same(hit, first)
    waited = lower_cached(SPEC, WL, CHIP, cache=tmp_path / "fg")
    assert (tmp_path / "fg").joinpath(next((tmp_path / "bg").iterdir()).name).read_bytes() == \
        next((tmp_path / "bg").iterdir()).read_bytes()
    _same(waited, hit)


def test_background_store_failure_is_not_cached(tmp_path: Path) -> None:
    """A background write that cannot happen (the cache "directory" is a file) leaves no entry and no error."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    lw = lower_cached(SPEC, WL, CHIP, cache=blocker, wait=False)
    wait_for_stores()
    assert len(lw.program) > 0 and blocker.read_bytes() == b""
