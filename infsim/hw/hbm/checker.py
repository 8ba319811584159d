"""Independent timing-constraint checker for HBM command logs.

Written from the constraint table below and the preset, not from the controllers: it shares only the
command codes and log layout with them. It checks, per channel:

- bank state: ACT only to a closed bank; RD/WR only to the open row; PRE only to an open bank; REF only
  when every bank is closed; PREA closes every open bank (and must respect each one's PRE constraints);
- command buses: at most one row command (ACT/PRE/PREA/REF) and one column command (RD/WR) per cycle;
- minimum separations of :data:`RULES` (previous command, next command, scope, latency);
- tFAW: any five consecutive ACTs span at least tFAW;
- data bus: read bursts ``[t+tCL, t+tCL+tBL)`` and write bursts ``[t+tCWL, t+tCWL+tBL)`` never overlap;
- refresh: no gap between cycle 0, consecutive REFs and the last command exceeds
  ``(refresh_postpone_max + 1) x tREFI``.

Scopes: ``bank`` same bank; ``bg_other`` same bank group, another bank; ``bg`` same bank group, any
bank; ``other_bg`` another bank group; ``channel`` anywhere in the channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .config import HbmPresetConfig, HbmTiming
from .protocol import ACT, CMD_NAMES, PRE, PREA, RD, REF, WR

Latency = Callable[[HbmTiming, int], int]  # (timing, tBL) -> cycles

RULES: tuple[tuple[str, str, str, Latency], ...] = (
    ("ACT", "ACT", "bank", lambda t, bl: t.tRC),
    ("ACT", "ACT", "bg_other", lambda t, bl: t.tRRD_L),
    ("ACT", "ACT", "other_bg", lambda t, bl: t.tRRD_S),
    ("ACT", "RD", "bank", lambda t, bl: t.tRCDRD),
    ("ACT", "WR", "bank", lambda t, bl: t.tRCDWR),
    ("ACT", "PRE", "bank", lambda t, bl: t.tRAS),
    ("PRE", "ACT", "bank", lambda t, bl: t.tRP),
    ("PRE", "REF", "channel", lambda t, bl: t.tRP),
    ("RD", "RD", "bg", lambda t, bl: t.tCCD_L),
    ("RD", "RD", "other_bg", lambda t, bl: t.tCCD_S),
    ("WR", "WR", "bg", lambda t, bl: t.tCCD_L),
    ("WR", "WR", "other_bg", lambda t, bl: t.tCCD_S),
    ("RD", "WR", "channel", lambda t, bl: t.tRTW),
    ("WR", "RD", "bg", lambda t, bl: t.tCWL + bl + t.tWTR_L),
    ("WR", "RD", "other_bg", lambda t, bl: t.tCWL + bl + t.tWTR_S),
    ("RD", "PRE", "bank", lambda t, bl: t.tRTP),
    ("WR", "PRE", "bank", lambda t, bl: t.tCWL + bl + t.tWR),
    ("REF", "ACT", "channel", lambda t, bl: t.tRFC),
    ("REF", "REF", "channel", lambda t, bl: t.tRFC),
)


@dataclass(frozen=True)
class Violation:
    """One broken constraint: where (log row, cycle, channel) and which rule."""

    index: int
    cycle: int
    channel: int
    rule: str

    def __str__(self) -> str:
        return f"log[{self.index}] cycle {self.cycle} ch {self.channel}: {self.rule}"


def check_log(cfg: HbmPresetConfig, log: np.ndarray, max_violations: int = 1000) -> list[Violation]:
    """All violations in ``log`` (rows ``cycle, cmd, channel, bankgroup, bank, row, col``), at most
    ``max_violations``. An empty list means the log obeys every constraint."""
    out: list[Violation] = []
    log = np.asarray(log, dtype=np.int64).reshape(-1, 7)
    for ch in np.unique(log[:, 2]):
        idx = np.nonzero(log[:, 2] == ch)[0]
        _check_channel(cfg, log, idx, int(ch), out, max_violations)
        if len(out) >= max_violations:
            break
    return out[:max_violations]


def _check_channel(cfg: HbmPresetConfig, log: np.ndarray, idx: np.ndarray, ch: int, out: list[Violation],
                   limit: int) -> None:
    o, t = cfg.organization, cfg.timing
    bl = o.burst_cycles
    nbg, nba = o.bankgroups, o.banks_per_group
    never = -(10**15)
    # last[cmd][(bg, ba)] = cycle of the latest such command to that bank; channel-wide commands use key None
    last: dict[str, dict[tuple[int, int] | None, int]] = {n: {} for n in CMD_NAMES}
    open_rows: dict[tuple[int, int], int] = {}
    acts: list[int] = []
    bursts: list[tuple[int, int, int]] = []  # (start, end, log index)
    row_bus: dict[int, int] = {}
    col_bus: dict[int, int] = {}
    refs: list[int] = []
    rules_by_next: dict[str, list[tuple[str, str, int]]] = {}
    for prev, nxt, scope, lat in RULES:
        rules_by_next.setdefault(nxt, []).append((prev, scope, lat(t, bl)))

    def bad(i: int, cyc: int, msg: str) -> None:
        if len(out) < limit:
            out.append(Violation(int(i), int(cyc), ch, msg))

    def latest(prev: str, scope: str, bank: tuple[int, int] | None) -> int:
        table = last[prev]
        if scope == "channel":
            return max(table.values(), default=never)
        assert bank is not None
        g, b = bank
        if scope == "bank":
            return table.get(bank, never)
        best = never
        for key, cyc in table.items():
            if key is None:
                continue
            g2, b2 = key
            if scope == "bg" and g2 == g:
                best = max(best, cyc)
            elif scope == "bg_other" and g2 == g and b2 != b:
                best = max(best, cyc)
            elif scope == "other_bg" and g2 != g:
                best = max(best, cyc)
        return best

    def check_rules(i: int, cyc: int, name: str, bank: tuple[int, int] | None) -> None:
        for prev, scope, lat in rules_by_next.get(name, []):
            if scope != "channel" and bank is None:
                continue
            p = latest(prev, scope, bank)
            if cyc - p < lat:
                bad(i, cyc, f"{prev}->{name} ({scope}) needs {lat} tCK, got {cyc - p}")

    prev_cycle = never
    for i in idx:
        cyc, cmd, _, g, b, r, _col = (int(v) for v in log[i])
        if cyc < prev_cycle:
            bad(i, cyc, "log not in cycle order")
        prev_cycle = cyc
        name = CMD_NAMES[cmd]
        bank = (g, b)
        if cmd in (ACT, PRE, PREA, REF):
            if cyc in row_bus:
                bad(i, cyc, f"two row commands in one cycle (with log[{row_bus[cyc]}])")
            row_bus[cyc] = i
        else:
            if cyc in col_bus:
                bad(i, cyc, f"two column commands in one cycle (with log[{col_bus[cyc]}])")
            col_bus[cyc] = i
        if cmd in (ACT, PRE, RD, WR) and not (0 <= g < nbg and 0 <= b < nba):
            bad(i, cyc, f"{name} to bank ({g}, {b}) outside the organisation")
            continue
        if cmd == ACT:
            if bank in open_rows:
                bad(i, cyc, f"ACT to bank {bank} that already has row {open_rows[bank]} open")
            check_rules(i, cyc, "ACT", bank)
            if len(acts) >= 4 and cyc - acts[-4] < t.tFAW:
                bad(i, cyc, f"tFAW: 5 ACTs within {cyc - acts[-4]} < {t.tFAW} tCK")
            acts.append(cyc)
            open_rows[bank] = r
            last["ACT"][bank] = cyc
        elif cmd in (PRE, PREA):
            targets = list(open_rows) if cmd == PREA else [bank]
            if cmd == PRE and bank not in open_rows:
                bad(i, cyc, f"PRE to closed bank {bank}")
            for bk in targets:
                check_rules(i, cyc, "PRE", bk)
                open_rows.pop(bk, None)
                last["PRE"][bk] = cyc
        elif cmd in (RD, WR):
            if open_rows.get(bank) != r:
                bad(i, cyc, f"{name} to bank {bank} row {r} but open row is {open_rows.get(bank)}")
            check_rules(i, cyc, name, bank)
            start = cyc + (t.tCL if cmd == RD else t.tCWL)
            bursts.append((start, start + bl, int(i)))
            last[name][bank] = cyc
        elif cmd == REF:
            if open_rows:
                bad(i, cyc, f"REF with banks open: {sorted(open_rows)}")
            check_rules(i, cyc, "REF", None)
            refs.append(cyc)
            last["REF"][None] = cyc
        else:
            bad(i, cyc, f"unknown command code {cmd}")
    bursts.sort()
    for (s0, e0, i0), (s1, _e1, i1) in zip(bursts, bursts[1:]):
        if s1 < e0:
            bad(i1, int(log[i1, 0]), f"data bus overlap with log[{i0}] ([{s0},{e0}) vs start {s1})")
    limit_gap = (cfg.controller.refresh_postpone_max + 1) * t.tREFI
    points = [0, *refs, int(log[idx[-1], 0])] if len(idx) else []
    for a, b in zip(points, points[1:]):
        if b - a > limit_gap:
            bad(int(idx[-1]), b, f"refresh: {b - a} tCK without REF > {limit_gap}")
