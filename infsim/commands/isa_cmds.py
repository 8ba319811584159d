"""ISA subcommands: ``isa list``, ``asm FILE.s --check | -o FILE.bin`` and ``disasm FILE.bin``.

``asm --check`` parses every file and validates it against the chip (``--chip``/``--set``); it prints
one ``ok`` line and exits 0 when all pass, otherwise one ``FILE:LINE: message`` line per problem on
stdout and exits 1 (parse errors stop at the first error of a file and also name the column).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from infsim.commands._util import add_chip_args, chip_from_args, print_json
from infsim.userfiles import check_output, write_output


def register(subparsers: Any) -> None:
    isa = subparsers.add_parser("isa", help="instruction-set reference")
    isa_sub = isa.add_subparsers(dest="isa_command", metavar="ISA_COMMAND")
    isa_sub.required = True
    lst = isa_sub.add_parser("list", help="every opcode: engines, operand slots, immediates, constraints")
    lst.add_argument("--json", action="store_true", help="print one JSON object")
    lst.set_defaults(func=cmd_isa_list)

    asm = subparsers.add_parser("asm", help="assemble (.s -> .bin) or check assembly files")
    asm.add_argument("files", nargs="+", metavar="FILE.s", help="assembly file(s)")
    asm.add_argument("--check", action="store_true", help="parse and validate against the chip; print ok")
    asm.add_argument("-o", "--output", metavar="FILE.bin", help="write the binary encoding (one input file)")
    add_chip_args(asm)
    asm.set_defaults(func=cmd_asm, _parser=asm)

    dis = subparsers.add_parser("disasm", help="binary program (.bin) -> assembly text")
    dis.add_argument("file", metavar="FILE.bin", help="binary program written by `infsim asm -o`")
    dis.add_argument("-o", "--output", metavar="FILE.s", help="write the text here instead of stdout")
    dis.set_defaults(func=cmd_disasm)


# ---- isa list --------------------------------------------------------------------------------------

def opcode_table() -> list[dict[str, Any]]:
    """The opcode table as plain data (what ``infsim isa list --json`` prints)."""
    from infsim.isa.opcodes import OPSPECS
    from infsim.isa.program import ENUM_KINDS

    out = []
    for op, spec in OPSPECS.items():
        imms = []
        for imm in spec.imms:
            d: dict[str, Any] = {"name": imm.name, "kind": imm.kind, "required": imm.default is None}
            if imm.default is not None:
                dflt = imm.default
                d["default"] = list(dflt) if isinstance(dflt, tuple) else dflt
            if imm.kind in ENUM_KINDS:
                d["values"] = [e.name for e in ENUM_KINDS[imm.kind]]
            imms.append(d)
        out.append({
            "name": op.name,
            "code": int(op),
            "engines": [e.name for e in spec.engines],
            "operands": [
                {
                    "name": s.name,
                    "output": s.output,
                    "optional": s.optional,
                    "spaces": [sp.name for sp in sorted(s.spaces)],
                    "dtypes": [dt.name for dt in sorted(s.dtypes)],
                }
                for s in spec.slots
            ],
            "immediates": imms,
            "constraints": list(spec.constraints),
            "doc": spec.doc,
        })
    return out


def cmd_isa_list(args: argparse.Namespace) -> int:
    table = opcode_table()
    if args.json:
        print_json({"opcodes": table})
        return 0
    from infsim.isa.dtypes import DType

    all_dt = len(DType)
    for e in table:
        print(f"{e['name']}  (code {e['code']}; engines: {', '.join(e['engines'])})")
        if e["doc"]:
            print(f"    {e['doc']}")
        for s in e["operands"]:
            role = "out" if s["output"] else "in"
            opt = ", optional" if s["optional"] else ""
            dts = "any dtype" if len(s["dtypes"]) == all_dt else "dtypes " + ",".join(s["dtypes"])
            print(f"    {s['name']}=  {role}{opt}; spaces {','.join(s['spaces'])}; {dts}")
        for i in e["immediates"]:
            extra = " (required)" if i["required"] else f" = {_fmt_default(i['default'])}"
            vals = f" in {{{', '.join(i['values'])}}}" if "values" in i else ""
            print(f"    {i['name']}=  {i['kind']}{vals}{extra}")
        for c in e["constraints"]:
            print(f"    constraint: {c}")
        print("    wait=SEM>=V[,SEM>=V]  signal=SEM+V[,SEM+V]  (every opcode)")
    return 0


def _fmt_default(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ",".join(str(x) for x in v) if v else "()"
    return str(v)


# ---- asm / disasm ----------------------------------------------------------------------------------

def cmd_asm(args: argparse.Namespace) -> int:
    import infsim.isa.encoding as encoding
    from infsim.isa.asm import parse_file_with_lines
    from infsim.isa.errors import AsmParseError

    if not args.check and not args.output:
        args._parser.error("give --check and/or -o FILE.bin")
    if args.output and len(args.files) != 1:
        args._parser.error("-o takes exactly one input file")
    chip = chip_from_args(args) if args.check else None
    if args.output:
        check_output(args.output, "-o")
    lines_out: list[str] = []
    programs = []
    for f in args.files:
        try:
            prog, lines = parse_file_with_lines(f)
        except AsmParseError as e:
            lines_out.append(str(e))
            continue
        except OSError as e:
            lines_out.append(f"{f}:0: cannot read: {e.strerror}")
            continue
        programs.append(prog)
        if chip is not None:
            from infsim.isa.validate import check

            for prob in check(prog, chip):
                line = lines[prob.index] if prob.index is not None and 0 <= prob.index < len(lines) else 1
                lines_out.append(f"{f}:{line}: {prob}")
    if lines_out:
        for ln in lines_out:
            print(ln)
        return 1
    if args.output:
        write_output(args.output, encoding.encode(programs[0]), "-o")
    if args.check:
        print("ok")
    return 0


def cmd_disasm(args: argparse.Namespace) -> int:
    import infsim.isa.encoding as encoding
    from infsim.isa.asm import print_program

    if args.output:
        check_output(args.output, "-o")
    text = print_program(encoding.load(args.file))
    if args.output:
        write_output(args.output, text, "-o")
    else:
        sys.stdout.write(text)
    return 0
