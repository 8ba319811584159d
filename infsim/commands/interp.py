"""``infsim interp FILE.s --input NAME=FILE.npy ... --output NAME=FILE.npy ...``: run the reference
interpreter (:mod:`infsim.isa.interp`) on an assembly file.

Inputs: one ``.npy`` per ``input``/``weight`` tensor. An array of the declared dtype is used as it is; an
array of raw bytes of the same item size (how ``np.save`` stores ``ml_dtypes`` arrays such as bf16) is
reinterpreted; any other numeric array is converted with the ISA's conversion rules (round to nearest
even, saturating). Outputs: any declared tensor may be saved; bf16 and fp8 tensors are written as float32
(exact widening), because ``.npy`` has no description of those dtypes.

The program is validated against the chip first (``--no-validate`` skips that). Errors (parse,
validation, bad inputs, out-of-bounds accesses, deadlocks) print one line and exit 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import IO, Any

import numpy as np

from infsim.commands._util import add_chip_args, chip_from_args, print_json
from infsim.errors import InfsimError
from infsim.userfiles import check_output, write_output


def _name_file(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got '{text}'")
    return name, path


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("interp", help="run the reference interpreter on an assembly file")
    p.add_argument("file", metavar="FILE.s", help="assembly file")
    p.add_argument("--input", "-i", dest="inputs", action="append", default=[], type=_name_file,
                   metavar="NAME=FILE.npy", help="initial value of an input/weight tensor (repeatable)")
    p.add_argument("--output", "-o", dest="outputs", action="append", default=[], type=_name_file,
                   metavar="NAME=FILE.npy", help="save a tensor's final value (repeatable; bf16/fp8 as float32)")
    p.add_argument("--max-steps", type=int, default=None, help="stop with an error after this many instructions")
    p.add_argument("--no-validate", action="store_true", help="skip validation against the chip")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of one line")
    add_chip_args(p)
    p.set_defaults(func=cmd_interp)


def load_input(path: str, decl: Any) -> np.ndarray:
    """Read ``path`` (.npy) and bring it to the declared dtype of tensor ``decl`` (see the module docstring)."""
    from infsim.isa.dtypes import cast

    try:
        arr = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (ValueError, OSError, EOFError) as e:
        raise InfsimError(f"{path}: not a readable .npy file ({e})") from None
    want = decl.dtype.np
    if arr.dtype == want:
        return arr
    if arr.dtype.kind == "V" and arr.dtype.itemsize == want.itemsize and arr.dtype.fields is None:
        return arr.view(want)
    if arr.dtype.kind not in "biuf":
        raise InfsimError(f"{path}: dtype {arr.dtype} cannot be converted to tensor '{decl.name}' "
                          f"({decl.dtype.name})")
    return cast(arr, decl.dtype)


def prepare_output(path: str, label: str) -> None:
    """Create the folders of an output path, then check it (:func:`~infsim.userfiles.check_output`); errors
    start with ``label``."""
    parent = Path(path).parent
    if not parent.is_dir():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise InfsimError(f"{label}: {parent} is a file, not a folder") from None
        except OSError as e:
            raise InfsimError(f"{label}: cannot create its folder: {e.strerror}") from None
    check_output(path, "--output", label)


def cmd_interp(args: argparse.Namespace) -> int:
    from infsim.isa.asm import parse_file
    from infsim.isa.interp import run

    program = parse_file(args.file)
    chip = chip_from_args(args)
    if not args.no_validate:
        from infsim.isa.validate import validate

        validate(program, chip)
    inputs: dict[str, np.ndarray] = {}
    for name, path in args.inputs:
        decl = program.tensors.get(name)
        if decl is None:
            raise InfsimError(f"--input {name}: no tensor '{name}' in {args.file} "
                              f"(declared: {', '.join(program.tensors) or 'none'})")
        if name in inputs:
            raise InfsimError(f"--input {name} given twice")
        inputs[name] = load_input(path, decl)
    for name, path in args.outputs:
        if name not in program.tensors:
            raise InfsimError(f"--output {name}: no tensor '{name}' in {args.file} "
                              f"(declared: {', '.join(program.tensors) or 'none'})")
        prepare_output(path, f"--output {name}={path}")
    result = run(program, inputs, chip, max_steps=args.max_steps)
    written = []
    for name, path in args.outputs:
        arr = result.hbm(name)
        if arr.dtype.kind not in "biuf":  # ml_dtypes (bf16, fp8) have kind 'V'; .npy cannot name them
            arr = arr.astype(np.float32)

        def save(f: IO[bytes], a: np.ndarray = arr) -> None:
            np.save(f, a, allow_pickle=False)

        write_output(path, save, "--output", f"--output {name}={path}")
        written.append({"tensor": name, "file": path, "dtype": str(arr.dtype), "shape": list(arr.shape)})
    if args.json:
        print_json({"file": args.file, "chip": chip.name, "steps": result.steps, "semaphores": result.semaphores,
                    "outputs": written})
    else:
        saved = ", ".join(f"{w['tensor']} -> {w['file']}" for w in written) or "no outputs saved"
        print(f"ok: {args.file}: {result.steps} instructions executed; {saved}")
    return 0
