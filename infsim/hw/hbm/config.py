"""HBM preset schema (organisation, timing, controller, energy) and loader.

A preset is a YAML file in ``infsim/config/hbm/`` (or any path). Every number lives in the YAML with a
comment naming its source (a ``[TAG]`` defined in ``docs/references.md``) or saying
``derived`` / ``assumed``; no timing value is hard-coded in the model.

Units and conventions
- One *channel* here is one independent unit with its own banks, data bus and command buses: the
  128-bit legacy channel (DRAMsim3's view) or the 64/32-bit pseudo-channel (Ramulator2's view).
  ``channels`` is the number of such units per stack.
- ``columns`` counts burst-sized column accesses per row (row bytes / bytes per access), not device
  column addresses.
- All timings are in tCK (command clock cycles). ``burst_cycles`` is the data-bus time of one access.
- IDD currents are mA per channel as modelled, VDD in volts (DRAMsim3 ``[power]`` convention).

Left out: stack IDs (SID) and tCCD_R, per-bank refresh (tRFCsb, tRREFD), power-down / self-refresh
states, ECC, temperature-dependent refresh rate, the ACT command taking two row-bus cycles.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from infsim.config.bounds import BoundedModel, sensible
from infsim.config.loader import load_raw, override_labels, preset_names, validate_model
from infsim.config.paths import FieldPaths

PRESET_DIR = Path(__file__).resolve().parents[2] / "config" / "hbm"

_FIELD_TOKENS = ("ro", "ra", "bg", "ba", "co", "ch")


_Model = BoundedModel  # finite numbers in sensible ranges (infsim.config.bounds)


class HbmOrganization(_Model):
    """Organisation of one stack."""

    standard: str = Field(description="JEDEC generation, e.g. HBM2, HBM2E, HBM3 (informational)")
    channel_kind: Literal["legacy", "pseudo"] = Field(description="what one modelled channel is")
    channels: int = Field(gt=0, description="independent channels (or pseudo-channels) per stack",
                          json_schema_extra=sensible(1, 64))
    bankgroups: int = Field(gt=0)
    banks_per_group: int = Field(gt=0)
    rows: int = Field(gt=0, description="rows per bank", json_schema_extra=sensible(1, 2**24))
    columns: int = Field(gt=0, description="burst-sized column accesses per row (row bytes / access bytes)")
    bus_width_bits: int = Field(gt=0, description="data bus width of one modelled channel")
    burst_length: int = Field(gt=0, description="BL: data beats per column access")
    burst_cycles: int = Field(gt=0, description="tCK the data bus is busy per access (tBL)")
    tck_ns: float = Field(gt=0, description="command clock period, ns")
    data_rate_gbps: float = Field(gt=0, description="per-pin data rate, Gb/s")

    @property
    def banks(self) -> int:
        return self.bankgroups * self.banks_per_group

    @property
    def access_bytes(self) -> int:
        return self.bus_width_bits * self.burst_length // 8

    @property
    def channel_peak_gbps(self) -> float:
        """Peak of one channel in GB/s (1e9 B/s): bytes per access over its data-bus time."""
        return self.access_bytes / (self.burst_cycles * self.tck_ns)

    @property
    def stack_peak_gbps(self) -> float:
        """Pin bandwidth of one stack, GB/s: channels x bus width x per-pin rate / 8."""
        return self.channels * self.bus_width_bits * self.data_rate_gbps / 8

    @model_validator(mode="after")
    def _consistent(self) -> HbmOrganization:
        if (self.bus_width_bits * self.burst_length) % 8:
            raise ValueError("bus_width_bits x burst_length must be a whole number of bytes")
        pin = self.bus_width_bits * self.data_rate_gbps / 8
        if abs(pin - self.channel_peak_gbps) > 1e-3 * pin:
            raise ValueError(
                f"pin bandwidth {pin:.3f} GB/s (bus_width_bits x data_rate_gbps / 8) disagrees with "
                f"access_bytes / (burst_cycles x tck_ns) = {self.channel_peak_gbps:.3f} GB/s"
            )
        return self


class HbmTiming(_Model):
    """Timing constraints in tCK. Names follow JEDEC / DRAMsim3."""

    tCL: int = Field(gt=0, description="read latency RL: RD to first data")
    tCWL: int = Field(ge=0, description="write latency WL: WR to first data")
    tRCDRD: int = Field(gt=0, description="ACT to RD, same bank")
    tRCDWR: int = Field(gt=0, description="ACT to WR, same bank")
    tRP: int = Field(gt=0, description="PRE to ACT/REF, same bank")
    tRAS: int = Field(gt=0, description="ACT to PRE, same bank")
    tRC: int = Field(gt=0, description="ACT to ACT, same bank")
    tRRD_S: int = Field(gt=0, description="ACT to ACT, different bank group")
    tRRD_L: int = Field(gt=0, description="ACT to ACT, same bank group")
    tCCD_S: int = Field(gt=0, description="column to column, different bank group")
    tCCD_L: int = Field(gt=0, description="column to column, same bank group")
    tFAW: int = Field(gt=0, description="window holding at most four ACTs")
    tWR: int = Field(gt=0, description="end of write data to PRE, same bank")
    tWTR_S: int = Field(gt=0, description="end of write data to RD, different bank group")
    tWTR_L: int = Field(gt=0, description="end of write data to RD, same bank group")
    tRTP: int = Field(gt=0, description="RD to PRE, same bank")
    tRTW: int = Field(gt=0, description="RD to WR, any bank of the channel (bus turnaround)")
    tRFC: int = Field(gt=0, description="all-bank REF to ACT / REF")
    tREFI: int = Field(gt=0, description="average interval between all-bank REF commands")

    @model_validator(mode="after")
    def _consistent(self) -> HbmTiming:
        if self.tRC < self.tRAS:
            raise ValueError("tRC must be >= tRAS")
        if self.tRFC >= self.tREFI:
            raise ValueError("tRFC must be < tREFI")
        for long, short in (("tRRD_L", "tRRD_S"), ("tCCD_L", "tCCD_S"), ("tWTR_L", "tWTR_S"), ("tRC", "tRRD_L")):
            if getattr(self, long) < getattr(self, short):
                raise ValueError(f"{long} must be >= {short}")
        return self


class HbmController(_Model):
    """Memory-controller policy (one controller per channel)."""

    address_mapping: str = Field(
        description="field order MSB->LSB from tokens ro, ra, bg, ba, co, ch (e.g. 'rorabgbachco'); 'ra' has size 1"
    )
    address_hash: Literal["none", "fold"] = Field(
        default="none", description="none: the mapping's fields as they are; fold: channel, bank group and bank "
        "offset by a digit sum of the higher address bits (see infsim.hw.hbm.mapping)")
    page_policy: Literal["open", "closed"] = "open"
    read_queue: int = Field(gt=0, description="read queue entries per channel")
    write_queue: int = Field(gt=0, description="write queue entries per channel")
    write_high_watermark: int = Field(gt=0, description="write queue length that starts a write drain")
    write_low_watermark: int = Field(ge=0, description="write queue length that ends a write drain")
    refresh_postpone_max: int = Field(
        ge=1, le=8, description="REFs that may be owed before refresh pre-empts traffic (1 = none postponed)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> HbmController:
        parse_mapping(self.address_mapping)
        if self.write_high_watermark > self.write_queue:
            raise ValueError("write_high_watermark must be <= write_queue")
        if self.write_low_watermark >= self.write_high_watermark:
            raise ValueError("write_low_watermark must be < write_high_watermark")
        return self


class HbmEnergy(_Model):
    """IDD currents (mA per modelled channel) and VDD for DRAMsim3-style energy accounting."""

    vdd_v: float = Field(gt=0)
    idd0_ma: float = Field(ge=0, description="one-bank ACT-PRE cycling current")
    idd2n_ma: float = Field(ge=0, description="precharge standby")
    idd3n_ma: float = Field(ge=0, description="active standby")
    idd4r_ma: float = Field(ge=0, description="burst read")
    idd4w_ma: float = Field(ge=0, description="burst write")
    idd5ab_ma: float = Field(ge=0, description="all-bank refresh")


class HbmPresetConfig(_Model):
    """One HBM preset: organisation, timing, controller policy and energy currents."""

    name: str
    description: str = ""
    organization: HbmOrganization
    timing: HbmTiming
    controller: HbmController
    energy: HbmEnergy

    @model_validator(mode="after")
    def _postpone_fits(self) -> HbmPresetConfig:
        t = self.timing
        if t.tREFI - self.controller.refresh_postpone_max * t.tRFC < 2 * t.tRC:
            # owed REFs must fit in one tREFI with room to open a row and issue a column command between
            # batches; otherwise refresh could pre-empt every request forever
            raise ValueError("tREFI must be >= controller.refresh_postpone_max x tRFC + 2 x tRC")
        return self


def parse_mapping(text: str) -> tuple[str, ...]:
    """``'RoBaCoBgCh'`` -> ``('ro', 'ba', 'co', 'bg', 'ch')`` (MSB first); each of ro/bg/ba/co/ch exactly once."""
    s = text.strip().lower()
    if len(s) % 2 or not re.fullmatch(r"[a-z]+", s):
        raise ValueError(f"address_mapping '{text}': expected two-letter tokens from {', '.join(_FIELD_TOKENS)}")
    toks = tuple(s[i : i + 2] for i in range(0, len(s), 2))
    bad = [t for t in toks if t not in _FIELD_TOKENS]
    if bad:
        raise ValueError(f"address_mapping '{text}': unknown token(s) {bad}; allowed {', '.join(_FIELD_TOKENS)}")
    need = {"ro", "bg", "ba", "co", "ch"}
    if not need <= set(toks) or len(set(toks)) != len(toks):
        raise ValueError(f"address_mapping '{text}': needs ro, bg, ba, co, ch exactly once (ra optional)")
    return tuple(t for t in toks if t != "ra")


def hbm_preset_names() -> list[str]:
    return preset_names(PRESET_DIR)


#: paths into :class:`HbmPresetConfig` (for overrides such as ``organization.channels``)
HBM_PATHS = FieldPaths(HbmPresetConfig)


def load_hbm_preset(name_or_path: str | Path | HbmPresetConfig,
                    overrides: Mapping[str, Any] | None = None) -> HbmPresetConfig:
    """Load and validate an HBM preset by name or path; ``overrides`` maps dotted fields to values
    (e.g. ``{'organization.channels': 2, 'controller.page_policy': 'closed'}``), checked against the schema
    (so a field the preset leaves at its default can be overridden too)."""
    if isinstance(name_or_path, HbmPresetConfig):
        if not overrides:
            return name_or_path
        data, source = name_or_path.model_dump(), name_or_path.name
    else:
        data, path = load_raw(name_or_path, PRESET_DIR, "HBM preset")
        source = str(path)
    labels = override_labels(overrides or {})
    data = HBM_PATHS.apply(data, overrides or {}, labels)
    return validate_model(HbmPresetConfig, data, source, labels)
