"""Present a Plan: a recipe-style table (kind x block ranges), markdown, or the JSON contract."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qpatch.gguf.model_facts import block_of, kind_of
from qpatch.predict.plan import Plan, Status

if TYPE_CHECKING:
    from qpatch.families.base import Family


@dataclass
class Group:
    label: str
    kind: str
    blocks: list[int]
    type: str
    rule: str
    count: int
    nbytes: int
    kept: bool = False  # written as it is because llama-quantize does not quantize it (Status.KEPT)


def block_label(blocks, kind: str) -> str:
    """Tensors of one kind over blocks, as recipes write them: blk.7.ffn_down, blk.[0-2,5].ffn_down."""
    bs = sorted(set(blocks))
    return f"blk.{bs[0]}.{kind}" if len(bs) == 1 else f"blk.[{block_ranges(bs)}].{kind}"


def block_ranges(blocks: list[int]) -> str:
    """Sorted block numbers as ranges: [0, 1, 2, 5] -> 0-2,5."""
    runs: list[list[int]] = []
    for b in blocks:
        if runs and b == runs[-1][1] + 1:
            runs[-1][1] = b
        else:
            runs.append([b, b])
    return ",".join(f"{a}" if a == z else f"{a}-{z}" for a, z in runs)


_TENSOR_ERROR = re.compile(r"^(?:blk\.(\d+)\.)?([\w.]+\.(?:weight|bias)): (.*)$", re.S)
MAX_ERROR_LINES = 12
_SHOWN_GROUPS = 4


def collapse_errors(errors: Sequence[str], limit: int = MAX_ERROR_LINES) -> list[str]:
    """One line per distinct message, its tensors grouped by kind over block ranges, in the order first
    seen: `this quantization requires an imatrix (IQ2_S): 114 tensors: blk.[0-5].attn_q_a.weight, ...`.
    Past `limit` lines, a count of the rest (`--format json` lists every error as it is)."""
    by_msg: dict[str, dict[str, list[int]]] = {}
    for e in errors:
        m = _TENSOR_ERROR.match(e)
        if not m:
            by_msg.setdefault(e, {})
            continue
        blk, rest, msg = m.groups()
        by_msg.setdefault(msg, {}).setdefault(rest, []).append(-1 if blk is None else int(blk))
    lines = []
    for msg, kinds in by_msg.items():
        names = [rest if blocks == [-1] else block_label(blocks, rest)
                 for rest, blocks in kinds.items()]
        n = sum(len(b) for b in kinds.values())
        if not names:
            lines.append(msg)
        elif n == 1:
            lines.append(f"{names[0]}: {msg}")
        else:
            more = f" and {len(names) - _SHOWN_GROUPS} more groups" if len(names) > _SHOWN_GROUPS else ""
            lines.append(f"{msg}: {n} tensors: {', '.join(names[:_SHOWN_GROUPS])}{more}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more (--format json lists every error)"]
    return lines


def groups(plan: Plan) -> list[Group]:
    """Non-block tensors one by one; block tensors grouped by (kind, type, rule) over blocks."""
    out: list[Group] = []
    by_key: dict[tuple[str, str, str], Group] = {}
    for t in plan.tensors:
        b = block_of(t.name)
        typ = t.type.name.lower()
        if b < 0:
            out.append(Group(t.name, kind_of(t.name), [], typ, t.rule, 1, t.nbytes, t.status is Status.KEPT))
            continue
        suffix = t.name.split(".", 2)[2].removesuffix(".weight")
        key = (suffix, typ, t.rule)
        g = by_key.get(key)
        if g is None:
            g = Group("", suffix, [], typ, t.rule, 0, 0, t.status is Status.KEPT)
            by_key[key] = g
            out.append(g)
        g.blocks.append(b)
        g.count += 1
        g.nbytes += t.nbytes
    for g in out:
        if g.blocks:
            g.label = block_label(g.blocks, g.kind)
    # block groups ordered by kind's first appearance, then first block
    first_kind: dict[str, int] = {}
    for i, g in enumerate(out):
        first_kind.setdefault(g.kind, i)
    return sorted(out, key=lambda g: (bool(g.blocks), first_kind[g.kind] if g.blocks else 0,
                                      g.blocks[0] if g.blocks else 0))


def human_bytes(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def to_json(plan: Plan) -> dict:
    return {
        "model": plan.model.name,
        "policy": plan.policy.name,
        "pin": plan.pin,
        "ftype": plan.options.ftype.name,
        "imatrix": plan.options.has_imatrix,
        "tensors": [
            {"name": t.name, "shape": list(t.shape), "type": t.type.name, "rule": t.rule}
            for t in plan.tensors
        ],
        "total_bytes": plan.total_bytes,
        "bpw": round(plan.bpw, 4),
        "errors": list(plan.errors),
        "warnings": list(plan.warnings),
    }


def format_json(plan: Plan) -> str:
    return json.dumps(to_json(plan), indent=2)


def options_text(o, family: "Family") -> list[str]:
    """Every llama-quantize option of the job that changes types, as `family`'s declarations spell them."""
    declared = {d.name: d for d in family.options}
    extra = [family.overrides.text(o.overrides)] if o.overrides else []
    return extra + [declared[name].text(value) for name, value in o.values]


def _header(plan: Plan) -> str:
    o = plan.options
    extra = options_text(o, plan.family)
    return (f"{plan.model.name}  arch={plan.model.arch}  blocks={plan.model.n_layer}  experts={plan.model.n_expert}  "
            f"policy={plan.policy.name}  pin={plan.pin}  ftype={o.ftype.name}  "
            f"imatrix={'yes' if o.has_imatrix else 'no'}" + ("  " + " ".join(extra) if extra else ""))


def _footer(plan: Plan) -> str:
    return (f"total {human_bytes(plan.total_bytes)} ({plan.total_bytes:,} bytes) in {len(plan.tensors)} tensors, "
            f"{plan.bpw:.3f} bits per weight")


LABEL_WIDTH, RULE_WIDTH = 46, 44  # a DeepSeek-V3 plan fits 120 columns


def _wrap_cell(text: str, width: int) -> list[str]:
    """A cell over `width` broken after a ',' or at a space, continuation lines indented by two."""
    out, rest = [], text
    while len(rest) > width:
        cut = max(rest.rfind(",", 0, width), rest.rfind(" ", 0, width))
        if cut <= 0:
            break
        out.append(rest[:cut + 1].rstrip())
        rest = "  " + rest[cut + 1:].lstrip()
    return out + [rest]


def _rows_wrapped(rows: Sequence[tuple[str, ...]], wrap: dict[int, int]) -> list[tuple[str, ...]]:
    out = []
    for r in rows:
        parts = [_wrap_cell(c, wrap[i]) if i in wrap else [c] for i, c in enumerate(r)]
        out += [tuple(p[k] if k < len(p) else "" for p in parts) for k in range(max(len(p) for p in parts))]
    return out


def _said(kind: str, msg: str) -> list[str]:
    """`error: ...` / `warning: ...` wrapped to 120 columns, continuation lines indented."""
    import textwrap

    return textwrap.wrap(f"{kind}: {msg}", 118, subsequent_indent="    ", break_on_hyphens=False,
                         break_long_words=False) or [f"{kind}:"]


def format_table(plan: Plan, *, show_unquantized: bool = False) -> str:
    rows: list[tuple[str, ...]] = []
    for g in groups(plan):
        if not show_unquantized and g.kept:
            continue
        rows.append((g.label, g.type, str(g.count), human_bytes(g.nbytes), g.rule))
    rows = _rows_wrapped(rows, {0: LABEL_WIDTH, 4: RULE_WIDTH})
    head = ("tensors", "type", "n", "size", "rule")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    lines = [_header(plan), ""]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:2]) + "  " + f"{{:>{widths[2]}}}  {{:>{widths[3]}}}  {{}}"
    lines.append(fmt.format(*head))
    lines.append(fmt.format(*("-" * w for w in widths), "-" * 4))
    for r in rows:
        lines.append(fmt.format(*r).rstrip())
    hidden = sum(1 for t in plan.tensors if t.status is Status.KEPT)
    lines.append("")
    if hidden and not show_unquantized:
        lines.append(f"({hidden} tensors kept as they are: norms, biases, router weights; --all shows them)")
    lines.append(_footer(plan))
    for w in plan.warnings:
        lines += _said("warning", w)
    for e in collapse_errors(plan.errors):
        lines += _said("error", e)
    return "\n".join(lines)


def format_markdown(plan: Plan) -> str:
    lines = [f"**{_header(plan)}**", "", "| tensors | type | n | size | rule |", "|---|---|---:|---:|---|"]
    for g in groups(plan):
        if g.kept:
            continue
        lines.append(f"| `{g.label}` | {g.type} | {g.count} | {human_bytes(g.nbytes)} | {g.rule} |")
    lines += ["", _footer(plan)]
    for e in collapse_errors(plan.errors):
        lines.append(f"\n> error: {e}")
    return "\n".join(lines)


def format_compare(base: Plan, new: Plan, *, markdown: bool = False) -> str:
    """What `new` changes relative to `base`: per kind and block range, from -> to, the size change, the rule;
    rows grouped by kind (in the model's order), then by first block."""
    rows: list[tuple[str, ...]] = []
    runs: dict[tuple[str, str, str, str], list[int]] = {}
    delta: dict[tuple[str, str, str, str], int] = {}
    kind_order: dict[str, int] = {}
    for a, b in zip(base.tensors, new.tensors):
        if a.type == b.type:
            continue
        blk = block_of(b.name)
        kind = b.name.split(".", 2)[2].removesuffix(".weight") if blk >= 0 else b.name
        key = (kind, a.type.name.lower(), b.type.name.lower(), b.rule)
        kind_order.setdefault(kind, len(kind_order))
        runs.setdefault(key, [])
        delta[key] = delta.get(key, 0) + b.nbytes - a.nbytes
        if blk >= 0:
            runs[key].append(blk)
    for key in sorted(runs, key=lambda k: (kind_order[k[0]], min(runs[k], default=-1), k)):
        kind, t0, t1, rule = key
        blocks = runs[key]
        label = block_label(blocks, kind) if blocks else kind
        d = delta[key]
        rows.append((label, t0, t1, str(max(1, len(blocks))), ("+" if d >= 0 else "-") + human_bytes(abs(d)), rule))
    saved = new.total_bytes - base.total_bytes
    opts = options_text(new.options, new.family)
    both = (f"both sides: ftype {new.options.ftype.name}, imatrix {'yes' if new.options.has_imatrix else 'no'}"
            + (", " + ", ".join(opts) if opts else ""))
    footer = (f"{base.policy.name}: {human_bytes(base.total_bytes)}, {base.bpw:.3f} bpw -> {new.policy.name}: "
              f"{human_bytes(new.total_bytes)}, {new.bpw:.3f} bpw "
              f"({'+' if saved >= 0 else '-'}{human_bytes(abs(saved))})")
    head = ("tensors", base.policy.name, new.policy.name, "n", "size", "rule")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|---|---|---:|---:|---|"]
        lines += [f"| `{r[0]}` | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} |" for r in rows]
        return "\n".join(lines + ["", footer])
    if not rows:
        return "\n".join([f"{_header(new)}", "", f"no tensor changes type relative to {base.policy.name}", footer, both]
                         + _compare_errors(base, new))
    n_groups = len(rows)
    rows = _rows_wrapped(rows, {0: LABEL_WIDTH, 5: RULE_WIDTH - 10})
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:3]) + f"  {{:>{widths[3]}}}  {{:>{widths[4]}}}  {{}}"
    lines = [_header(new), "", fmt.format(*head), fmt.format(*("-" * w for w in widths), "-" * 4)]
    lines += [fmt.format(*r).rstrip() for r in rows]
    n = f"{n_groups} group{'s' if n_groups != 1 else ''} changed"
    return "\n".join(lines + ["", f"{n}; " + footer, both] + _compare_errors(base, new))


def _compare_errors(base: Plan, new: Plan) -> list[str]:
    """Why llama-quantize would abort either job: `plan --compare` names them (its exit status says so)."""
    out = []
    for w in new.warnings:
        out += _said("warning", f"{new.policy.name}: {w}")
    for p in (base, new):
        for e in collapse_errors(p.errors):
            out += _said("error", f"{p.policy.name}: {e}")
    return out


def compare_json(base: Plan, new: Plan) -> str:
    """`plan --compare --format json`: both plans in full and the tensors whose type differs."""
    changes = [{"name": b.name, "from": a.type.name, "to": b.type.name, "rule": b.rule}
               for a, b in zip(base.tensors, new.tensors) if a.type != b.type]
    return json.dumps({"base": to_json(base), "plan": to_json(new), "changes": changes,
                       "size_change_bytes": new.total_bytes - base.total_bytes}, indent=2)
