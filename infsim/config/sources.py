"""What a chip YAML says about its numbers: the comment that cites each field's source, the file's list of
references, the unit of each field (from its name), and the field reference (``docs/chip-fields.md``).

Presets cite a source (or say ``assumed``) in the comment on each value's line, continued on comment-only
lines indented below it; the header comment lists the references (``[INF2] Neuron docs, ...``).
:func:`field_sources` reads those comments back by dotted field path (line numbers from the YAML parser,
so keys are found whatever the layout). Left out: comments of files that are not block-style YAML.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml

from .paths import CHIP_PATHS, _unwrap

#: unit of a field by the suffix of its name, longest suffix first
UNITS: tuple[tuple[str, str], ...] = (
    ("_pj_per_byte", "pJ/byte"), ("_pj_per_bit", "pJ/bit"), ("_per_hour_usd", "USD/hour"),
    ("_per_pe_per_cycle", "MACs/PE/cycle"), ("_per_cycle_per_lane", "elements/cycle/lane"),
    ("_w_per_core", "W per core"), ("_ghz", "GHz"), ("_gbps", "GB/s"), ("_bytes", "bytes"), ("_ns", "ns"),
    ("_cycles", "cycles"), ("_pj", "pJ"), ("_gib", "GiB"), ("_w", "W"), ("_usd", "USD"),
)


def unit_of(path: str) -> str:
    """The unit of a dotted field (``hbm.bandwidth_gbps`` -> ``GB/s``; a key of a mapping takes its field's
    unit: ``tensor_engine.macs_per_pe_per_cycle.bf16`` -> ``MACs/PE/cycle``), ``''`` for counts and names."""
    parts = path.split(".")
    for name in reversed(parts):
        for suffix, unit in UNITS:
            if name.endswith(suffix):
                return unit
        if name in ("cores_per_chip", "partitions", "banks", "stacks", "lanes", "rows", "cols", "chips"):
            return ""
    return ""


def _comment(line: str) -> str:
    """The comment of a YAML line (text after the first ``#`` outside quotes), stripped."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[i + 1:].strip()
    return ""


def field_sources(path: str | Path) -> dict[str, str]:
    """``{dotted field: its source comment}`` of a chip YAML (comment-only lines indented deeper than the key
    continue its comment)."""
    text = Path(path).read_text()
    lines = text.splitlines()
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key, val in node.value:
            name = f"{prefix}{key.value}"
            line = key.start_mark.line
            col = key.start_mark.column
            parts = [_comment(lines[line])]
            if isinstance(val, yaml.MappingNode):
                walk(val, name + ".")
            else:
                for nxt in lines[line + 1:]:
                    s = nxt.lstrip()
                    if not s.startswith("#") or len(nxt) - len(s) <= col:
                        break
                    parts.append(s[1:].strip())
            c = " ".join(p for p in parts if p)
            if c:
                out[name] = c
    walk(yaml.compose(text), "")
    return out


def references(path: str | Path) -> list[str]:
    """The references listed in a chip YAML's header comment (``[KEY] description`` lines)."""
    out = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        s = line[1:].strip()
        if s.startswith("["):
            out.append(s)
    return out


#: meanings of the fields whose schema entry has no description (kept here, not in the schema, to leave
#: schema.py's field definitions as they are; a description in the schema takes precedence)
MEANINGS: dict[str, str] = {
    "name": "preset name", "description": "one-line description", "generation": "NeuronCore generation",
    "cores_per_chip": "NeuronCores per chip", "tensor_engine.clock_ghz": "tensor engine clock",
    "vector_engine.clock_ghz": "vector engine clock", "scalar_engine.clock_ghz": "scalar engine clock",
    "gpsimd_engine.clock_ghz": "GpSimd engine clock", "sbuf.partitions": "SBUF partitions (rows)",
    "sbuf.bytes_per_partition": "SBUF bytes per partition (per core)", "sbuf.banks": "SBUF banks",
    "psum.partitions": "PSUM partitions", "psum.bytes_per_partition": "PSUM bytes per partition (per core)",
    "psum.banks": "PSUM banks (matmul accumulation buffers)", "dma.engines_per_core": "DMA engines per core",
    "hbm.stacks": "HBM stacks per chip", "hbm.capacity_gib": "HBM capacity per chip",
    "hbm.channels_per_stack": "HBM channels per stack (unset: the DRAM preset's)",
    "links.links_per_chip": "chip-to-chip links per chip", "links.topology": "chip-to-chip topology",
    "links.torus_dims": "torus dimensions (torus2d)", "links.intra_chip_latency_ns": "core-to-core latency in a chip",
    "energy.sbuf_pj_per_byte": "SBUF access energy", "energy.psum_pj_per_byte": "PSUM access energy",
    "energy.link_pj_per_bit": "chip-to-chip link energy", "instance.name": "instance type",
    "instance.chips": "chips per instance", "instance.price_per_hour_usd": "instance price",
}


def field_table() -> list[dict[str, str]]:
    """Every leaf field of the chip schema: dotted path, type, unit and meaning (the schema's description)."""
    from .schema import ChipConfig

    rows = []
    for path in CHIP_PATHS.leaves():
        parts = path.split(".")
        model: Any = ChipConfig
        desc, ann = "", None
        for part in parts:
            fields = getattr(_unwrap(model), "model_fields", None)
            if fields is None or part not in fields:  # a key of a Literal-keyed mapping
                desc = f"{desc} (key {part})" if desc else f"key {part}"
                ann = typing.get_args(_unwrap(ann))[1] if ann is not None else None
                break
            f = fields[part]
            desc, ann, model = f.description or "", f.annotation, f.annotation
        rows.append({"field": path, "type": _type_name(ann), "unit": unit_of(path),
                     "meaning": desc or MEANINGS.get(path, "")})
    return rows


def _type_name(ann: Any) -> str:
    ann = _unwrap(ann)
    if ann is None:
        return ""
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in typing.get_args(ann))
    if isinstance(ann, type):
        return ann.__name__
    return str(ann).replace("typing.", "")


def chip_fields_markdown() -> str:
    """``docs/chip-fields.md``: every chip field with its unit and meaning (a test keeps the file in sync)."""
    from tabulate import tabulate

    rows = [[f"`{r['field']}`", r["type"], r["unit"], r["meaning"]] for r in field_table()]
    head = ("# Chip configuration fields\n\n"
            "Every field of a chip YAML (`infsim/config/schema.py`), as `--set FIELD=VALUE`, sweep axes and "
            "`infsim chip diff` name them. Units follow from the name's suffix. Generated by "
            "`infsim chip schema --markdown > docs/chip-fields.md` (`tests/config/test_chip_cli.py` checks it is "
            "current); "
            "`infsim chip schema` prints the JSON schema.\n\n")
    return head + tabulate(rows, headers=["field", "type", "unit", "meaning"], tablefmt="github") + "\n"
