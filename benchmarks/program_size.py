"""Program-size benchmark: generate, store, encode and print a ~1M-instruction program.

Builds a synthetic decode-step-like program (a Llama-2-7B decode step is ~10^6 instructions) through
:meth:`Program.append` -- weight tiles streamed from HBM by DMA into rotating SBUF buffers guarded by
semaphores, matmuls accumulating into PSUM, activations and vector ops, over 2 cores -- and reports:

* instructions/s generated (Instruction construction + append) and bytes per instruction in memory;
* binary encode / decode seconds and megabytes;
* ``print_program`` and ``parse`` seconds on a 100k-instruction program (text is the slow path);
* stream split and Instruction-view iteration times; peak RSS after generation and at the end (the
  end figure also holds the encoded bytes, the decoded copy and the text slice).

Writes ``benchmarks/results/program_size.json``. Run: ``python benchmarks/program_size.py [--instructions N]``.
The program is structurally valid (every field encodable) but not tuned to be legal on a given chip.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

from infsim.isa import ActFunc, AluOp, DType, Engine, Instruction, Op, Program, hbm, psum, sbuf
from infsim.isa.asm import parse, print_program
from infsim.isa.encoding import decode, encode

NBUF = 4  # rotating SBUF weight buffers per core
K, N = 128, 512  # weight tile: 128 rows x 512 columns, bf16
HIDDEN, FFN = 4096, 11008


def generate(n_instructions: int, cores: int = 2) -> Program:
    """A synthetic decode-step program of about ``n_instructions`` instructions over ``cores`` cores."""
    p = Program(cores, cores)
    p.add_tensor("x", DType.bf16, [HIDDEN], "input")
    p.add_tensor("w", DType.bf16, [HIDDEN, FFN * 8], "weight")
    p.add_tensor("y", DType.bf16, [cores, FFN], "output")
    for c in range(cores):
        for b in range(NBUF):
            p.add_semaphore(f"c{c}.ld{b}")
            p.add_semaphore(f"c{c}.free{b}")
        p.add_semaphore(f"c{c}.mm")
        p.add_semaphore(f"c{c}.act")
        p.add_semaphore(f"c{c}.vec")
    w_row_stride = FFN * 8
    tiles_total = (HIDDEN // K) * (FFN * 8 // N)
    # the operands a lowering would keep for its buffers (only the HBM weight tile changes every time)
    xs = sbuf(K, 1, DType.bf16, offset=0)
    bufs = [sbuf(K, N, DType.bf16, offset=4096 + b * N * 2) for b in range(NBUF)]
    accs = [psum(1, N, offset=j * N * 4) for j in range(4)]
    hs = [sbuf(1, N, DType.bf16, offset=65536 + j * N * 2) for j in range(2)]
    gs = [sbuf(1, N, DType.bf16, offset=69632 + j * N * 2) for j in range(2)]
    o = sbuf(1, N, DType.fp32, offset=73728)
    per_core = n_instructions // cores
    # per core and tile: dma + matmul; every 4 tiles an epilogue of 4 (activate, tensor_tensor,
    # tensor_scalar, tensor_copy) => 3 instructions per tile on average
    for c in range(cores):
        ld = [f"c{c}.ld{b}" for b in range(NBUF)]
        free = [f"c{c}.free{b}" for b in range(NBUF)]
        mm, act, vec = f"c{c}.mm", f"c{c}.act", f"c{c}.vec"
        count = 0
        t = 0
        epi = 0
        while count < per_core:
            b = t % NBUF
            k_use = t // NBUF  # how many times buffer b was used before
            tile = (t + c * 7919) % tiles_total
            row, col = divmod(tile, FFN * 8 // N)
            src = hbm("w", K, N, DType.bf16, row_stride=w_row_stride, offset=2 * (row * K * w_row_stride + col * N))
            dst = bufs[b]
            p.append(Instruction(Op.dma_copy, (dst, src), {}, Engine.dma, c, t % 4,
                                 ((free[b], k_use),) if k_use else (), ((ld[b], 1),)))
            acc = t % 4 != 0
            p.append(Instruction(Op.matmul, (accs[t // 4 % 4], xs, dst),
                                 {"accumulate": acc}, Engine.tensor, c, 0, ((ld[b], k_use + 1),),
                                 ((free[b], 1),) if t % 4 != 3 else ((free[b], 1), (mm, 1))))
            count += 2
            if t % 4 == 3:
                epi += 1
                ps, h, g = accs[t // 4 % 4], hs[epi % 2], gs[epi % 2]
                p.append(Instruction(Op.activate, (h, ps, None, None, None),
                                     {"func": ActFunc.silu, "scale_imm": 1.0, "bias_imm": 0.0}, Engine.scalar, c, 0,
                                     ((mm, epi),), ((act, 1),)))
                p.append(Instruction(Op.tensor_tensor, (g, h, g), {"op": AluOp.mul}, Engine.vector, c, 0,
                                     ((act, epi),), ()))
                p.append(Instruction(Op.tensor_scalar, (o, g, None, None),
                                     {"op0": AluOp.mul, "imm0": 0.125, "op1": AluOp.add, "imm1": 1e-05},
                                     Engine.vector, c, 0, (), ()))
                p.append(Instruction(Op.tensor_copy, (h, o), {}, Engine.gpsimd, c, 0, (), ((vec, 1),)))
                count += 4
            t += 1
    return p


def _sub(p: Program, n: int) -> Program:
    return p if len(p) <= n else generate(n, p.num_cores)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instructions", type=int, default=1_000_000)
    ap.add_argument("--text-instructions", type=int, default=100_000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "program_size.json"))
    args = ap.parse_args()

    t0, c0 = time.perf_counter(), time.process_time()
    p = generate(args.instructions)
    gen_s, gen_cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(p)
    rss_gen = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t0 = time.perf_counter()
    streams = p.streams()
    streams_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = encode(p)
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    q = decode(data)
    dec_s = time.perf_counter() - t0
    assert q == p

    small = _sub(p, args.text_instructions)
    t0 = time.perf_counter()
    text = print_program(small)
    print_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = parse(text, "bench.s")
    parse_s = time.perf_counter() - t0
    assert back == small
    t0 = time.perf_counter()
    k = sum(1 for _ in small)
    iter_s = time.perf_counter() - t0
    assert k == len(small)

    op_mix: dict[str, int] = {}
    ops = p.instr["op"]
    for o in Op:
        c = int((ops == int(o)).sum())
        if c:
            op_mix[o.name] = c
    res = {
        "instructions": n,
        "cores": p.num_cores,
        "streams": len(streams),
        "distinct_access_patterns": len(p.aps),
        "op_mix": op_mix,
        "generate_s": round(gen_s, 3),
        "generate_cpu_s": round(gen_cpu, 3),
        "instructions_per_s_generated": round(n / gen_s),
        "instructions_per_cpu_s_generated": round(n / gen_cpu),
        "bytes_per_instruction": round(p.nbytes() / n, 2),
        "in_memory_mb": round(p.nbytes() / 1e6, 2),
        "instr_record_bytes": p.instr.dtype.itemsize,
        "ap_record_bytes": p.aps.dtype.itemsize,
        "streams_split_s": round(streams_s, 3),
        "encode_s": round(enc_s, 3),
        "decode_s": round(dec_s, 3),
        "encoded_mb": round(len(data) / 1e6, 2),
        "text_slice_instructions": len(small),
        "print_program_s": round(print_s, 3),
        "text_mb": round(len(text.encode()) / 1e6, 2),
        "parse_s": round(parse_s, 3),
        "parse_instructions_per_s": round(len(small) / parse_s),
        "iterate_instruction_views_s": round(iter_s, 3),
        "peak_rss_after_generate_mb": round(rss_gen, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
