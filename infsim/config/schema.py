"""Chip configuration schema (pydantic): every hardware number the simulator uses lives here.

Fields carry their unit in the name (``_ghz``, ``_bytes``, ``_cycles``, ``_ns``, ``_gbps``, ``_pj``,
``_w``). Presets are YAML files in ``infsim/config/presets/`` whose every number cites its source in a
comment or says ``assumed``. Unknown fields are errors (``extra='forbid'``), so a typo fails at load
time with ``file: field: message`` (see :mod:`infsim.config.loader`). Every number is finite and within a
sensible range given by its unit (:mod:`infsim.config.bounds`; a field may name its own with
``json_schema_extra=sensible(lo, hi)``).

What is deliberately *not* here: DRAM-command-level HBM organisation and timings, which live in HBM
presets (``infsim/config/hbm/*.yaml``) referenced by ``hbm.dram_preset``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeGuard, get_args

from pydantic import Field, NonNegativeFloat, PositiveFloat, model_validator

from .bounds import BoundedModel, sensible

#: HBM stacks of one chip at most (4 on the largest preset); the DRAM-level model simulates every channel
MAX_HBM_STACKS = 16

DTypeName = Literal["fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "int8", "uint8", "int32"]
_DTYPE_NAMES: frozenset[str] = frozenset(get_args(DTypeName))


def _is_dtype_name(name: str) -> TypeGuard[DTypeName]:
    return name in _DTYPE_NAMES


def by_dtype(table: Mapping[DTypeName, float], dtype: str, default: float | None = None) -> float:
    """``table[dtype]`` for a per-dtype table of the config (``macs_per_pe_per_cycle``, ``mac_pj``) looked up by
    a dtype name given as a plain string: ``default`` when the table has no entry for it (a name that is not
    a dtype has none), ``KeyError`` when it has none and no default is given."""
    if _is_dtype_name(dtype) and dtype in table:
        return float(table[dtype])
    if default is None:
        raise KeyError(dtype)
    return default


_Model = BoundedModel


class TensorEngineConfig(_Model):
    """Systolic array (TensorE)."""

    rows: int = Field(gt=0, description="PE rows = contraction (K) limit = SBUF partitions it reads",
                      json_schema_extra=sensible(1, 4096))
    cols: int = Field(gt=0, description="PE columns = stationary free size (M) limit",
                      json_schema_extra=sensible(1, 4096))
    clock_ghz: float = Field(gt=0)
    moving_free_max: int = Field(gt=0, description="largest moving free size N of one matmul")
    macs_per_pe_per_cycle: dict[DTypeName, PositiveFloat] = Field(
        description="MACs per PE per cycle by input dtype (1.0 = full bf16 rate; fp32 0.25 on NC-v2)"
    )
    min_moving_cycles: int = Field(ge=0, description="minimum cycles of one MultiplyMoving (MM_INIT_LATENCY)")
    stationary_load_speedup: float = Field(
        gt=0, description="fast LoadStationary: a stationary of M columns loads in ceil(M / speedup) cycles "
        "(speed relative to a MultiplyMoving of the same free size)"
    )
    pipeline_latency_cycles: int = Field(ge=0, description="fill+drain latency through the array to PSUM")
    issue_overhead_cycles: int = Field(ge=0, description="fixed sequencer cost per instruction")


class ElementwiseEngineConfig(_Model):
    """Vector, scalar (activation) or GpSimd engine: lanes x elements/cycle with a fixed overhead."""

    lanes: int = Field(gt=0, description="partitions processed in parallel (one lane per partition)")
    clock_ghz: float = Field(gt=0)
    elems_per_cycle_per_lane: float = Field(gt=0, description="single-input elements per lane per cycle")
    two_input_factor: float = Field(ge=1, description="cost multiplier for two-input ops (tensor_tensor)")
    fixed_overhead_cycles: int = Field(ge=0, description="static cost per instruction (access init, issue)")
    strided_penalty: float = Field(ge=1, description="slowdown when the innermost stride exceeds 16 bytes")
    func_cost: dict[str, PositiveFloat] = Field(default_factory=dict, description="per-function cost multiplier")
    reduce_extra_cycles: int = Field(default=0, ge=0, description="extra cycles of a fused free-axis reduce")
    strided_threshold_bytes: int = Field(default=16, ge=0,
                                         description="innermost stride (bytes) above which strided_penalty applies")


EngineName = Literal["tensor", "vector", "scalar", "gpsimd", "dma", "cc", "sync"]


class MemoryConfig(_Model):
    partitions: int = Field(gt=0, json_schema_extra=sensible(1, 4096))
    bytes_per_partition: int = Field(gt=0, json_schema_extra=sensible(1, 2**26, "bytes"))
    banks: int = Field(default=1, gt=0)
    partition_start_rules: tuple[tuple[int, int], ...] = Field(
        default=(),
        description="(max_partitions, start_alignment) pairs, ascending: a compute-engine operand of n partitions "
        "must start at a multiple of the alignment of the first rule with n <= max_partitions (empty: any start)",
    )
    max_free_elements: int | None = Field(
        default=None, gt=0, json_schema_extra=sensible(1, 2**24),
        description="largest free size (elements per partition) of one compute-engine operand",
    )
    no_access_engines: tuple[EngineName, ...] = Field(
        default=(), description="engines that cannot read or write this memory"
    )

    @model_validator(mode="after")
    def _rules(self) -> MemoryConfig:
        prev = 0
        for maxp, align in self.partition_start_rules:
            if maxp <= prev or align < 1:
                raise ValueError(
                    f"partition_start_rules: ({maxp}, {align}): max_partitions must ascend and alignment be >= 1"
                )
            prev = maxp
        return self

    @property
    def total_bytes(self) -> int:
        return self.partitions * self.bytes_per_partition


class DmaConfig(_Model):
    engines_per_core: int = Field(gt=0)
    queues_per_core: int = Field(gt=0, le=256, description="DMA queues per core, all engines together (queue q runs "
                                 "on engine q % engines_per_core; the ISA's queue field is 8 bits)")
    engine_gbps: float = Field(gt=0, description="peak bytes per ns (GB/s) of one DMA engine")
    fixed_latency_ns: float = Field(ge=0, description="per-transfer fixed cost (descriptor setup, sync)")
    descriptor_overhead_ns: float = Field(ge=0, description="cost per contiguous chunk (descriptor)")
    min_efficient_chunk_bytes: int = Field(gt=0, description="chunk size at which a descriptor runs at peak")
    arbitration_bytes: int | None = Field(default=None, gt=0, description=(
        "bytes an engine moves for one queue before taking the next ready queue's turn (round-robin "
        "between the queues of one engine); unset: whole transfers"))


class HbmConfig(_Model):
    stacks: int = Field(gt=0, json_schema_extra=sensible(1, MAX_HBM_STACKS))
    capacity_gib: float = Field(gt=0)
    bandwidth_gbps: float = Field(gt=0, description="peak chip HBM bandwidth, GB/s (1e9 B/s)")
    latency_ns: float = Field(ge=0, description="unloaded read latency (simple model)")
    dram_preset: str | None = Field(default=None, description="HBM DRAM-level preset name (memory model)")
    memory_model: str = Field(default="dram", min_length=1, description=(
        "timing model behind the engine's memory interface, a name registered in infsim.engine.memory "
        "(dram: DRAM-level streaming efficiency of dram_preset; simple: bandwidth + latency)"))
    channels_per_stack: int | None = Field(default=None, gt=0, json_schema_extra=sensible(1, 64))
    address_hash: Literal["none", "fold"] = Field(default="none", description=(
        "how the memory controller selects channel and bank from an address, for the dram model's access "
        "patterns: none (the DRAM preset's modular mapping) or fold (hashed, infsim.hw.hbm.mapping)"))


#: collective algorithms a chip may pin (``links.collective_algorithm``); ``auto`` lets the runtime's rule choose
#: (:func:`infsim.hw.collectives.choice.choose_algorithm`)
CollectiveAlgorithm = Literal["auto", "ring", "bidir", "tree", "hier", "mesh", "rdh", "kangaring"]


class LinkConfig(_Model):
    links_per_chip: int = Field(ge=0)
    link_gbps: float = Field(ge=0, description="one-direction bandwidth of one link, GB/s")
    latency_ns: float = Field(ge=0, description="per-hop latency of a chip-to-chip link")
    topology: Literal["none", "ring", "torus2d", "switch"]
    torus_dims: tuple[int, int] | None = None
    intra_chip_gbps: float = Field(gt=0, description=(
        "rate at which one core's collective transfers leave it (its collective DMA), GB/s: the whole path "
        "of a core-to-core transfer inside a chip and the first hop of one to another chip"))
    intra_chip_latency_ns: float = Field(ge=0, description="latency of a core's collective egress (first hop)")
    collective_step_overhead_ns: float = Field(ge=0, description="fixed cost per collective step (sync)")
    collective_launch_overhead_ns: float = Field(
        default=0.0, ge=0, description="fixed cost once per collective and rank (launch, descriptor setup)"
    )
    collective_reduce_gbps: float = Field(
        default=0.0, ge=0,
        description="rate at which a core reduces received collective data, GB/s (0: keeps up, not modelled)",
    )
    collective_model: str = Field(default="link", min_length=1, description=(
        "timing model of collectives, a name registered in infsim.engine.collectives (link: the topology-aware "
        "link model of infsim.hw.collectives)"))
    collective_algorithm: CollectiveAlgorithm = Field(default="auto", description=(
        "collective algorithm: auto (chosen per op, size, ranks and topology as the Neuron runtime does) or "
        "one pinned for every collective (an infsim option: the runtime documents no such setting)"))
    collective_mesh_max_bytes: int = Field(default=2**20, ge=0, description=(
        "auto: messages below this size use the mesh (direct writes) algorithm"))
    collective_rdh_max_bytes: int = Field(default=56 * 2**20, ge=0, description=(
        "auto: messages below this size (and at least the mesh limit) use recursive doubling/halving where "
        "the chips of the group form a hypercube"))


class EnergyConfig(_Model):
    mac_pj: dict[DTypeName, NonNegativeFloat] = Field(description="energy of one MAC by input dtype")
    vector_op_pj: float = Field(ge=0, description="per element-op on vector/gpsimd engines")
    scalar_op_pj: float = Field(ge=0, description="per element on the scalar (activation) engine")
    sbuf_pj_per_byte: float = Field(ge=0)
    psum_pj_per_byte: float = Field(ge=0)
    hbm_pj_per_bit: float = Field(ge=0, description="HBM device + controller/PHY/NoC per bit moved")
    link_pj_per_bit: float = Field(ge=0)
    static_w: float = Field(ge=0, description="static/idle power of one chip outside its cores (HBM refresh and PHY, "
                            "IO, clocks); the chip's static power is static_w + cores_per_chip x static_w_per_core")
    static_w_per_core: float = Field(default=0.0, ge=0, description="static power of one core (logic and SRAM "
                                     "leakage): follows cores_per_chip")


class InstanceConfig(_Model):
    name: str
    chips: int = Field(gt=0, json_schema_extra=sensible(1, 4096))
    price_per_hour_usd: float = Field(ge=0)


class ChipConfig(_Model):
    name: str
    description: str = ""
    generation: str = ""
    cores_per_chip: int = Field(gt=0, json_schema_extra=sensible(1, 1024))
    lnc: int = Field(default=1, ge=1, le=2, description=(
        "logical NeuronCore size: physical cores that act as one tensor-parallel rank (1 or 2; trn2/trn3 "
        "serve with 2); a run's tp counts logical cores"))
    tensor_engine: TensorEngineConfig
    vector_engine: ElementwiseEngineConfig
    scalar_engine: ElementwiseEngineConfig
    gpsimd_engine: ElementwiseEngineConfig
    sbuf: MemoryConfig
    psum: MemoryConfig
    dma: DmaConfig
    hbm: HbmConfig
    links: LinkConfig
    energy: EnergyConfig
    instance: InstanceConfig

    @model_validator(mode="after")
    def _consistent(self) -> ChipConfig:
        te = self.tensor_engine
        if self.sbuf.partitions < te.rows:
            raise ValueError(f"sbuf.partitions ({self.sbuf.partitions}) < tensor_engine.rows ({te.rows})")
        if self.psum.partitions < te.cols:
            raise ValueError(f"psum.partitions ({self.psum.partitions}) < tensor_engine.cols ({te.cols})")
        if self.psum.bytes_per_partition // self.psum.banks < 4:  # 4 bytes: one fp32 accumulator
            raise ValueError(
                f"psum.bytes_per_partition ({self.psum.bytes_per_partition}) / psum.banks ({self.psum.banks}) "
                "leaves a PSUM bank smaller than one fp32 accumulator (4 bytes per partition)"
            )
        if self.cores_per_chip % self.lnc:
            raise ValueError(f"cores_per_chip ({self.cores_per_chip}) is not a multiple of lnc ({self.lnc})")
        for dt in te.macs_per_pe_per_cycle:
            if dt not in self.energy.mac_pj:
                raise ValueError(f"energy.mac_pj has no entry for {dt} (tensor_engine supports it)")
        return self

    # ---- derived figures (used by reports; never stored) -----------------------------------
    def peak_tflops(self, dtype: str = "bf16") -> float:
        te = self.tensor_engine
        rate = by_dtype(te.macs_per_pe_per_cycle, dtype, 0.0)
        return 2 * te.rows * te.cols * rate * te.clock_ghz * self.cores_per_chip / 1e3

    @property
    def static_power_w(self) -> float:
        """Static power of one chip: ``energy.static_w + cores_per_chip x energy.static_w_per_core``."""
        return self.energy.static_w + self.cores_per_chip * self.energy.static_w_per_core

    @property
    def hbm_bytes(self) -> int:
        return int(self.hbm.capacity_gib * 2**30)

    @property
    def logical_cores_per_chip(self) -> int:
        """Tensor-parallel ranks one chip holds: ``cores_per_chip / lnc``."""
        return self.cores_per_chip // self.lnc
