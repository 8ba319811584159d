"""The opcode table: one entry per instruction, the single place an opcode's rules live.

Each :class:`OpSpec` names the engine that executes the opcode, its operand slots (which memory
spaces each slot may address, whether it is an output, whether it is optional), the immediates it
takes, and the dtypes its engine accepts. Validation, the assembler, the encoder and the interpreter
are all driven by this table.

Engines follow NeuronCore-v2 ([NKI-ARCH2] and [NKI-ISA] in docs/references.md): ``tensor`` (systolic
array), ``vector``, ``scalar`` (activation), ``gpsimd``, ``dma`` (DMA queues; a stream per queue) and
``cc`` (collective-communication queues, one stream per queue). ``sync`` is a sequencer-only stream
(the Neuron "Sync engine") that runs only synchronization instructions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from .dtypes import DType


class Space(IntEnum):
    """Memory spaces. HBM is per chip and byte-addressed; SBUF and PSUM are per core, partition x bytes."""

    hbm = 0
    sbuf = 1
    psum = 2


class Engine(IntEnum):
    tensor = 0
    vector = 1
    scalar = 2
    gpsimd = 3
    dma = 4
    cc = 5
    sync = 6


class Op(IntEnum):
    """Opcodes; the integer value is the binary encoding."""

    matmul = 0
    transpose = 1
    tensor_tensor = 2
    tensor_scalar = 3
    tensor_reduce = 4
    tensor_copy = 5
    memset = 6
    iota = 7
    select = 8
    activate = 9
    dma_copy = 10
    sem_wait = 11
    sem_signal = 12
    barrier = 13
    all_reduce = 14
    all_gather = 15
    reduce_scatter = 16
    send = 17
    recv = 18
    nop = 19


class AluOp(IntEnum):
    """Element-wise binary ALU operations (vector engine; compare ops give 1.0 / 0.0)."""

    add = 0
    sub = 1
    mul = 2
    div = 3
    max = 4
    min = 5
    eq = 6
    ne = 7
    lt = 8
    le = 9
    gt = 10
    ge = 11
    bypass = 12  # returns the first operand unchanged (lets tensor_scalar skip its second op)


class ReduceOp(IntEnum):
    add = 0
    max = 1
    min = 2


class ActFunc(IntEnum):
    identity = 0
    relu = 1
    exp = 2
    tanh = 3
    sigmoid = 4
    silu = 5
    gelu = 6
    gelu_tanh = 7
    rsqrt = 8
    sqrt = 9
    square = 10
    reciprocal = 11


SBUF = frozenset({Space.sbuf})
ONCHIP = frozenset({Space.sbuf, Space.psum})
ANY = frozenset({Space.hbm, Space.sbuf, Space.psum})
PSUM = frozenset({Space.psum})

ALL_DTYPES = frozenset(DType)
FLOAT16_8 = frozenset({DType.bf16, DType.fp16, DType.fp8_e4m3, DType.fp8_e5m2})
MATMUL_IN = frozenset({DType.fp32, DType.bf16, DType.fp16, DType.fp8_e4m3, DType.fp8_e5m2, DType.int8})


@dataclass(frozen=True)
class Slot:
    """One operand slot of an opcode."""

    name: str
    spaces: frozenset[Space]
    output: bool = False
    optional: bool = False
    dtypes: frozenset[DType] = ALL_DTYPES


@dataclass(frozen=True)
class Imm:
    """One immediate of an opcode. ``kind`` is 'int', 'float', 'bool' or the name of an enum."""

    name: str
    kind: str
    default: object = None


@dataclass(frozen=True)
class OpSpec:
    op: Op
    engines: tuple[Engine, ...]
    slots: tuple[Slot, ...]
    imms: tuple[Imm, ...] = ()
    doc: str = ""
    constraints: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.op.name

    @property
    def engine(self) -> Engine:
        """The default engine (the first of ``engines``)."""
        return self.engines[0]

    def slot(self, name: str) -> Slot:
        for s in self.slots:
            if s.name == name:
                return s
        raise KeyError(name)


# Maximum operand slots of any instruction (encoding width).
MAX_OPERANDS = 5
# Maximum free (non-partition) dimensions of an access pattern.
MAX_FREE_DIMS = 4
# Maximum semaphore waits / signals carried by one instruction.
MAX_WAITS = 2
MAX_SIGNALS = 2


def _s(name: str, spaces: frozenset[Space], *, output: bool = False, optional: bool = False,
       dtypes: frozenset[DType] = ALL_DTYPES) -> Slot:
    return Slot(name, spaces, output, optional, dtypes)


OPSPECS: dict[Op, OpSpec] = {
    s.op: s
    for s in [
        OpSpec(
            Op.matmul,
            (Engine.tensor,),
            (
                _s("dst", PSUM, output=True, dtypes=frozenset({DType.fp32})),
                _s("stationary", SBUF, dtypes=MATMUL_IN),
                _s("moving", SBUF, dtypes=MATMUL_IN),
            ),
            (Imm("accumulate", "bool", False),),
            "dst[M,N] (+)= stationary[K,M]^T . moving[K,N]; fp32 accumulation in PSUM. "
            "accumulate=0 overwrites dst, accumulate=1 adds to it.",
            (
                "K = partitions of stationary = partitions of moving <= tensor_engine.rows",
                "M = free size of stationary <= tensor_engine.cols; dst partitions = M",
                "N = free size of moving <= tensor_engine.moving_free_max; dst free size = N",
                "stationary and moving have the same dtype",
            ),
        ),
        OpSpec(
            Op.transpose,
            (Engine.tensor,),
            (_s("dst", PSUM, output=True, dtypes=frozenset({DType.fp32})), _s("src", SBUF, dtypes=MATMUL_IN)),
            (),
            "dst[F,P] = src[P,F]^T (a matmul against the identity).",
            ("P <= tensor_engine.rows", "F <= tensor_engine.cols",),
        ),
        OpSpec(
            Op.tensor_tensor,
            (Engine.vector, Engine.gpsimd),
            (_s("dst", ONCHIP, output=True), _s("in0", ONCHIP), _s("in1", ONCHIP)),
            (Imm("op", "AluOp"),),
            "dst = in0 <op> in1, element-wise in fp32.",
            ("in0, in1 and dst have the same shape", "in0 and in1 are not both in PSUM"),
        ),
        OpSpec(
            Op.tensor_scalar,
            (Engine.vector, Engine.gpsimd, Engine.scalar),
            (
                _s("dst", ONCHIP, output=True),
                _s("src", ONCHIP),
                _s("scalar0", ONCHIP, optional=True),
                _s("scalar1", ONCHIP, optional=True),
            ),
            (Imm("op0", "AluOp"), Imm("imm0", "float", 0.0), Imm("op1", "AluOp", "bypass"),
             Imm("imm1", "float", 0.0)),
            "dst = (src <op0> s0) <op1> s1 where s0 is the per-partition operand scalar0[p, 0] if given "
            "else imm0 (likewise s1).",
            ("scalar0/scalar1: one element per partition, same partitions as src",),
        ),
        OpSpec(
            Op.tensor_reduce,
            (Engine.vector, Engine.gpsimd),
            (_s("dst", ONCHIP, output=True), _s("src", ONCHIP)),
            (Imm("op", "ReduceOp"), Imm("axes", "int", 1)),
            "dst[p, outer...] = reduce over the innermost `axes` free dimensions of src.",
            ("1 <= axes <= free dims of src", "dst shape = src shape without the reduced dims"),
        ),
        OpSpec(
            Op.tensor_copy,
            (Engine.vector, Engine.gpsimd, Engine.scalar),
            (_s("dst", ONCHIP, output=True), _s("src", ONCHIP)),
            (),
            "dst = cast(src) (round to nearest even, saturating).",
            ("same shape",),
        ),
        OpSpec(
            Op.memset,
            (Engine.vector, Engine.gpsimd),
            (_s("dst", ONCHIP, output=True),),
            (Imm("value", "float", 0.0),),
            "dst = value.",
        ),
        OpSpec(
            Op.iota,
            (Engine.gpsimd,),
            (_s("dst", SBUF, output=True),),
            (Imm("base", "int", 0), Imm("channel_multiplier", "int", 0), Imm("multipliers", "ints", ())),
            "dst[p, i0, i1, ...] = base + channel_multiplier * p + sum_k multipliers[k] * i_k (int32 "
            "arithmetic, then cast).",
            ("len(multipliers) = free dims of dst",),
        ),
        OpSpec(
            Op.select,
            (Engine.vector, Engine.gpsimd),
            (_s("dst", ONCHIP, output=True), _s("pred", ONCHIP), _s("on_true", ONCHIP),
             _s("on_false", ONCHIP)),
            (),
            "dst = on_true where pred != 0 else on_false.",
            ("all operands have the same shape",),
        ),
        OpSpec(
            Op.activate,
            (Engine.scalar,),
            (
                _s("dst", ONCHIP, output=True),
                _s("src", ONCHIP),
                _s("bias", ONCHIP, optional=True),
                _s("scale", ONCHIP, optional=True),
                _s("reduce_dst", ONCHIP, output=True, optional=True),
            ),
            (Imm("func", "ActFunc"), Imm("scale_imm", "float", 1.0), Imm("bias_imm", "float", 0.0)),
            "dst = func(src * scale + bias); scale is the per-partition operand scale[p, 0] if given "
            "else scale_imm (bias likewise). reduce_dst[p, 0] = sum of dst[p, :] in fp32 if given.",
            ("bias/scale: one element per partition", "reduce_dst: one element per partition"),
        ),
        OpSpec(
            Op.dma_copy,
            (Engine.dma,),
            (_s("dst", ANY, output=True), _s("src", ANY)),
            (),
            "dst = cast(src): copy between any two spaces, element by element in access-pattern order.",
            ("same number of elements", "dtype cast through fp32 when dtypes differ"),
        ),
        OpSpec(Op.sem_wait, (Engine.sync,), (), (), "Wait for the instruction's waits; does nothing else."),
        OpSpec(Op.sem_signal, (Engine.sync,), (), (), "Perform the instruction's signals; nothing else."),
        OpSpec(
            Op.barrier,
            (Engine.sync,),
            (),
            (Imm("sem", "sem"), Imm("count", "int")),
            "Rendezvous of `count` streams on semaphore `sem`: each arrival adds 1; the k-th barrier a "
            "stream executes on `sem` waits until sem >= k*count.",
        ),
        OpSpec(
            Op.all_reduce,
            (Engine.cc,),
            (_s("dst", ANY, output=True), _s("src", ANY)),
            (Imm("group", "group"), Imm("op", "ReduceOp", "add")),
            "Every member of the replica group gets the element-wise reduction of all members' src.",
            ("every member issues a matching all_reduce with the same element count",),
        ),
        OpSpec(
            Op.all_gather,
            (Engine.cc,),
            (_s("dst", ANY, output=True), _s("src", ANY)),
            (Imm("group", "group"),),
            "dst = concatenation of all members' src in group rank order (flattened element order).",
            ("dst elements = members * src elements",),
        ),
        OpSpec(
            Op.reduce_scatter,
            (Engine.cc,),
            (_s("dst", ANY, output=True), _s("src", ANY)),
            (Imm("group", "group"), Imm("op", "ReduceOp", "add")),
            "Member r gets chunk r of the element-wise reduction of all members' src.",
            ("src elements = members * dst elements",),
        ),
        OpSpec(
            Op.send,
            (Engine.cc,),
            (_s("src", ANY),),
            (Imm("peer", "int"), Imm("tag", "int", 0)),
            "Send src to core `peer`; matched with that core's recv with the same tag, in order.",
        ),
        OpSpec(
            Op.recv,
            (Engine.cc,),
            (_s("dst", ANY, output=True),),
            (Imm("peer", "int"), Imm("tag", "int", 0)),
            "Receive into dst from core `peer` (matching send with the same tag, in order).",
            ("element count equals the matching send's",),
        ),
        OpSpec(Op.nop, tuple(Engine), (), (), "No operation (still waits/signals)."),
    ]
}

COLLECTIVE_OPS = frozenset({Op.all_reduce, Op.all_gather, Op.reduce_scatter, Op.send, Op.recv})
SYNC_OPS = frozenset({Op.sem_wait, Op.sem_signal, Op.barrier, Op.nop})
