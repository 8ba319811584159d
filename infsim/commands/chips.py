"""``infsim chips`` (the shipped presets and their key figures) and ``infsim chip show NAME|PATH`` (one
validated configuration in full, as YAML or, with ``--json``, as JSON)."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from infsim.commands._util import print_json
from infsim.config import ChipConfig, load_chip, preset_names

# (key, column header, format) of the ``infsim chips`` table; keys are those of :func:`chip_summary`.
_COLUMNS: list[tuple[str, str, str]] = [
    ("name", "chip", "{}"),
    ("generation", "generation", "{}"),
    ("cores_per_chip", "cores", "{}"),
    ("peak_bf16_tflops", "bf16 TFLOPS", "{:.0f}"),
    ("peak_fp8_tflops", "fp8 TFLOPS", "{:.0f}"),
    ("peak_int8_tops", "int8 TOPS", "{:.0f}"),
    ("hbm_gbps", "HBM GB/s", "{:.0f}"),
    ("hbm_gib", "HBM GiB", "{:g}"),
    ("sbuf_mib_per_chip", "SBUF MiB", "{:g}"),
    ("links_gbps_per_chip", "links GB/s", "{:.0f}"),
    ("static_w", "static W", "{:g}"),
]


def chip_summary(cfg: ChipConfig) -> dict[str, Any]:
    """Key per-chip figures of one configuration (units in the key names; peaks derived, not stored).

    ``peak_fp8_tflops`` uses ``fp8_e4m3``; a dtype the tensor engine does not support gives 0.
    """
    return {
        "name": cfg.name,
        "generation": cfg.generation,
        "cores_per_chip": cfg.cores_per_chip,
        "peak_bf16_tflops": round(cfg.peak_tflops("bf16"), 3),
        "peak_fp8_tflops": round(cfg.peak_tflops("fp8_e4m3"), 3),
        "peak_int8_tops": round(cfg.peak_tflops("int8"), 3),
        "peak_fp32_tflops": round(cfg.peak_tflops("fp32"), 3),
        "hbm_gbps": cfg.hbm.bandwidth_gbps,
        "hbm_gib": cfg.hbm.capacity_gib,
        "sbuf_mib_per_chip": round(cfg.sbuf.total_bytes * cfg.cores_per_chip / 2**20, 3),
        "psum_mib_per_chip": round(cfg.psum.total_bytes * cfg.cores_per_chip / 2**20, 3),
        "links_gbps_per_chip": round(cfg.links.links_per_chip * cfg.links.link_gbps, 3),
        "static_w": cfg.static_power_w,
        "instance": cfg.instance.name,
        "instance_chips": cfg.instance.chips,
    }


def _table(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    cells = [[("-" if r[k] == 0 and k.startswith("peak_") else f.format(r[k])) for k, _, f in _COLUMNS] for r in rows]
    return tabulate(cells, headers=[h for _, h, _ in _COLUMNS], tablefmt="simple", disable_numparse=True,
                    colalign=["left", "left"] + ["right"] * (len(_COLUMNS) - 2))


class _Dumper(yaml.SafeDumper):
    """Block-style mappings, flow-style (inline) lists: ``torus_dims: [4, 4]``."""


_Dumper.add_representer(
    list, lambda d, data: d.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def cmd_chips(args: argparse.Namespace) -> int:
    """``infsim chips [--json]``: every shipped preset, validated, with its key figures."""
    rows = [chip_summary(load_chip(name)) for name in preset_names()]
    if args.json:
        print_json({"chips": rows})
    else:
        print(_table(rows))
        print("\npeaks are per chip, derived from the array size, clock and per-dtype rate ('-': not supported);"
              "\n`infsim chip show NAME` prints a preset in full with its sources in the YAML comments")
    return 0


def _source_file(name: str) -> Any:
    """The YAML file of a preset name or path, or None for a chip that has none."""
    from infsim.config.loader import resolve_preset

    return resolve_preset(name)


def cmd_chip_show(args: argparse.Namespace) -> int:
    """``infsim chip show NAME|PATH [--set F=V ...] [--json]``: the whole validated configuration, the file it
    came from and the references it cites."""
    from infsim.config.sources import references

    cfg = load_chip(args.name, list(args.overrides or []))
    path = _source_file(args.name)
    if args.json:
        print_json(cfg.model_dump(mode="json"))  # loads back as a chip (the text output names the file, sources)
        return 0
    text = yaml.dump(cfg.model_dump(mode="json"), Dumper=_Dumper, sort_keys=False, width=120)
    summary = chip_summary(cfg)
    derived = "\n".join(f"#   {k}: {v}" for k, v in summary.items() if k not in ("name", "generation"))
    src = f" with --set {' '.join(args.overrides)}" if args.overrides else ""
    print(f"# chip '{cfg.name}' from {path.resolve()}{src} (validated; each value's source: the comment on its "
          "line in that file, or `infsim chip diff`)")
    refs = references(path)
    if refs:
        print("# references cited:\n" + "\n".join(f"#   {r}" for r in refs))
    print(text.rstrip())
    print(f"# derived (not stored):\n{derived}")
    return 0


def chip_diff(a: str, b: str) -> list[dict[str, Any]]:
    """Every leaf field whose value differs between chips ``a`` and ``b`` (names or YAML paths): field, unit,
    both values and the source comment of each side."""
    from infsim.config import CHIP_PATHS
    from infsim.config.sources import field_sources, unit_of

    ca, cb = load_chip(a), load_chip(b)
    sa, sb = field_sources(_source_file(a)), field_sources(_source_file(b))
    rows = []
    for path in CHIP_PATHS.leaves():
        va, vb = CHIP_PATHS.get(ca, path, None), CHIP_PATHS.get(cb, path, None)
        if va != vb:
            rows.append({"field": path, "unit": unit_of(path), "a": va, "b": vb, "source_a": sa.get(path, ""),
                         "source_b": sb.get(path, "")})
    return rows


def cmd_chip_diff(args: argparse.Namespace) -> int:
    """``infsim chip diff A B [--json]``."""
    from tabulate import tabulate

    rows = chip_diff(args.a, args.b)
    if args.json:
        print_json({"a": args.a, "b": args.b, "fields": rows})
        return 0
    if not rows:
        print(f"{args.a} and {args.b} have the same values in every field")
        return 0

    def cut(s: str, n: int = 60) -> str:
        return s if len(s) <= n else s[: n - 3] + "..."

    table = [[r["field"], r["unit"], cut(_show(r["a"]), 24), cut(_show(r["b"]), 24), cut(r["source_a"], 50),
              cut(r["source_b"], 50)]
             for r in rows]
    print(tabulate(table, headers=["field", "unit", args.a, args.b, f"source ({args.a})", f"source ({args.b})"],
                   tablefmt="simple", disable_numparse=True))
    print(f"\n{len(rows)} field(s) differ; sources are the comments in the chip files (--json has them whole)")
    return 0


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "-" if v is None else str(v)


def cmd_chip_schema(args: argparse.Namespace) -> int:
    """``infsim chip schema [--markdown]``: the chip config's JSON schema, or the field reference."""
    import json

    if args.markdown:
        from infsim.config.sources import chip_fields_markdown

        print(chip_fields_markdown(), end="")
        return 0
    print(json.dumps(ChipConfig.model_json_schema(), indent=2))
    return 0


def register(sub: Any) -> None:
    """Add the ``chips`` and ``chip`` subcommands."""
    p = sub.add_parser("chips", help="list the chip presets with their key figures",
                       description="List the shipped chip presets with key per-chip figures.")
    p.add_argument("--json", action="store_true", help="print one JSON object {'chips': [...]}")
    p.set_defaults(func=cmd_chips)

    p = sub.add_parser("chip", help="inspect one chip configuration",
                       description="Inspect one chip configuration (a preset name or a path to a YAML file).")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    show = actions.add_parser("show", help="print the whole validated configuration",
                              description="Print the whole validated configuration (YAML, or JSON with --json).")
    show.add_argument("name", metavar="NAME|PATH", help="preset name (see `infsim chips`) or path to a chip YAML")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                      help="override one config field, e.g. --set hbm.bandwidth_gbps=1600 (repeatable)")
    show.add_argument("--json", action="store_true", help="print the configuration as one JSON object")
    show.set_defaults(func=cmd_chip_show)
    diff = actions.add_parser("diff", help="fields that differ between two chips, with units and sources",
                              description="Fields that differ between two chips (names or YAML paths), with units "
                                          "and the source each file cites.")
    diff.add_argument("a", metavar="A", help="first chip: preset name or path to a chip YAML")
    diff.add_argument("b", metavar="B", help="second chip: preset name or path to a chip YAML")
    diff.add_argument("--json", action="store_true", help="print one JSON object {'a', 'b', 'fields': [...]}")
    diff.set_defaults(func=cmd_chip_diff)
    schema = actions.add_parser("schema", help="the chip configuration's JSON schema",
                                description="Print the chip configuration's JSON schema (pydantic).")
    schema.add_argument("--markdown", action="store_true",
                        help="print the field reference (docs/chip-fields.md) instead: field, type, unit, meaning")
    schema.set_defaults(func=cmd_chip_schema)
