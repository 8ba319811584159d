"""``infsim sim FILE.s --chip NAME``: simulate an ISA program and print cycles, engines, HBM bytes, energy.

``FILE`` is assembly text (``.s``) or the binary encoding (``.bin``). ``--json`` prints
:meth:`infsim.result.SimResult.to_dict` (the stable JSON output: ``total_cycles``, ``total_ns``,
``engines``, ``hbm_bytes_read``, ``hbm_bytes_written``, ``energy_j``, ...). ``--trace OUT.json`` writes a
Chrome/Perfetto trace (:mod:`infsim.trace`). The program is validated against the chip first, as
``asm --check`` does (an SBUF offset past the partition, an HBM read past a tensor, a core the chip lacks, a
matmul K mismatch ... is one ``FILE:LINE: problem`` error, not a simulated time); ``--no-validate`` skips it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from infsim.commands._util import add_chip_args, chip_from_args, print_json


def register(sub: Any) -> None:
    p = sub.add_parser("sim", help="simulate an ISA program on a chip",
                       description="Simulate an ISA program (assembly .s or binary .bin) on a chip preset: "
                                   "total cycles and time, per-engine busy/stall, HBM traffic and energy.")
    p.add_argument("file", metavar="FILE", help="program: assembly (.s) or binary encoding (.bin)")
    add_chip_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--trace", metavar="OUT.json", help="write a Chrome/Perfetto trace-event JSON file")
    p.add_argument("--fidelity", choices=["cycle", "analytical"], default="cycle",
                   help="cycle: the event engine (default); analytical: closed forms, no event loop")
    p.add_argument("--no-validate", action="store_true", help="simulate without validating against the chip first")
    p.add_argument("--memory", default=None, metavar="MODEL",
                   help="HBM model behind the memory interface, overriding the chip's hbm.memory_model (dram: "
                        "DRAM-level, the presets' default; simple: bandwidth+latency)")
    p.set_defaults(func=run)


def load_program(path: str) -> Any:
    """Parse assembly or decode a binary program, by extension (``.bin`` = binary)."""
    return load_program_with_lines(path)[0]


def load_program_with_lines(path: str) -> tuple[Any, list[int] | None]:
    """:func:`load_program` and the source line of each instruction (``None`` for a binary program)."""
    if Path(path).suffix == ".bin":
        from infsim.isa.encoding import load

        return load(path), None
    from infsim.isa.asm import parse_file_with_lines

    return parse_file_with_lines(path)


def check_program(program: Any, lines: list[int] | None, chip: Any, path: str) -> None:
    """Validate ``program`` against ``chip``; the first problem is ``FILE:LINE: problem`` (``FILE: instruction
    N: ...`` for a binary program), with the count of the others."""
    from infsim.errors import InfsimError
    from infsim.isa.validate import check

    problems = check(program, chip)
    if not problems:
        return
    p = problems[0]
    line = lines[p.index] if lines is not None and p.index is not None and 0 <= p.index < len(lines) else None
    where = f"{path}:{line}" if line is not None else path
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    raise InfsimError(f"{where}: {p}{more}; --no-validate simulates it anyway")


def run(args: argparse.Namespace) -> int:
    from infsim.sim import simulate

    chip = chip_from_args(args)
    if args.trace:
        from infsim.userfiles import check_output

        check_output(args.trace, "--trace")  # before the simulation, not after it
    program, lines = load_program_with_lines(args.file)
    if not args.no_validate:
        check_program(program, lines, chip, args.file)
    result = simulate(program, chip, fidelity=args.fidelity, memory=args.memory, trace=bool(args.trace))
    if args.trace:
        from infsim.trace import write_trace

        if result.timeline is None:  # analytical fidelity has per-instruction times too; guard anyway
            from infsim.errors import InfsimError

            raise InfsimError("this fidelity produces no per-instruction timeline for --trace")
        write_trace(result, args.trace, flag="--trace")
    if args.json:
        print_json(result.to_dict())
        return 0
    d = result.to_dict()
    print(f"chip {d['chip']}  fidelity {d['fidelity']}  instructions {d['num_instructions']}")
    print(f"total_cycles {d['total_cycles']}  total_ns {d['total_ns']:.1f}  (tensor-engine clock "
          f"{d['clock_ghz']} GHz)")
    print(f"hbm_bytes_read {d['hbm_bytes_read']}  hbm_bytes_written {d['hbm_bytes_written']}  "
          f"hbm_gbps {d['hbm_gbps']:.1f}")
    print(f"energy_j {d['energy_j']:.6g}  power_w {d['power_w']:.1f}")
    from tabulate import tabulate

    rows = [[name, e["instructions"], e["busy_cycles"], e["stall_cycles"], e["idle_cycles"], f"{e['utilization']:.2f}"]
            for name, e in d["engines"].items()]
    print(tabulate(rows, headers=["engine", "instr", "busy_cycles", "stall_cycles", "idle_cycles", "util"],
                   tablefmt="simple", disable_numparse=True, colalign=["left"] + ["right"] * 5))
    return 0
