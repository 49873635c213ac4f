"""Export a policy's types for one model as `--tensor-type` overrides for a stock llama-quantize.

What a pin's stock llama-quantize does with `--tensor-type PAT=TYPE` is its family's
(`Family.override_result`): the pattern is lowercased and searched (`std::regex_search`,
ECMAScript) in the tensor name; in the b6700 family the last match wins, only for tensors whose
stock choice did not need the shape fallback, with no shape check; in the current family the
first match wins and replaces the mix (its counters do not advance), and the fallback follows.

So, comparing the policy's plan (what the patched binary writes) with stock's plan:
- a tensor whose stock choice needed the shape fallback keeps stock's fallback type whatever
  the list says: if the policy wants another type there, that tensor is *inexpressible*;
- every other tensor where the two differ needs an override to the policy's *final* type
  (which includes the policy's quantize-loop behaviour: deepseek-v3's "no imatrix entry ->
  Q8_0" is an override to Q8_0, which needs no imatrix; the policy's final type always fits
  the row, else the patched binary itself would abort);
- a stock abort the policy avoids (an imatrix entry of the wrong length, which deepseek-v3
  ignores) cannot be undone by any override: those tensors are inexpressible too.

Minimisation. Overrides have the shape `^blk\\.(BLOCKS)\\.(KINDS)\\.weight$` (or an anchored
alternation of exact names for tensors outside `blk.N.`). For each target type, the kinds that
need it are split into as few groups as possible that can share one block set: a pattern may
match a tensor that needs its type, a tensor whose policy type already is its type, and a
tensor the list cannot reach (not quantized, stock fell back, or no such tensor in the model),
never a tensor the policy wants at another type. So no tensor is matched by two patterns of
different types: the order of the list does not matter (last-match and first-match readers
agree), and no override lands on a row it does not fit. Within those bounds each group's block
set is widened to the shortest range-class regex (`[3-9]|1\\d|2[0-5]`, `\\d+`). The count is the
minimum for that pattern shape: one pattern per (type, group of kinds), plus one per type for
tensors outside the blocks.

Every export is checked before it is returned: the exported list is run through the Python
model of stock llama-quantize and every tensor must get the policy's type, except exactly the
ones reported as inexpressible.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass

from qpatch.errors import QuantizeError, UsageError
from qpatch.gguf.catalogue import T
from qpatch.gguf.model_facts import ModelFacts
from qpatch.policy import loader
from qpatch.predict.engine import plan
from qpatch.predict.plan import Plan, Status
from qpatch.predict.report import block_label
from qpatch.recipes import patterns

FORMATS = ("tensor-type", "tensor-type-file", "custom-q", "model-card")

# A tensor the list can address by block and kind. Block numbers with a leading zero (which
# sscanf would read as a number) are left to exact-name patterns.
_BLK = re.compile(r"^blk\.(0|[1-9][0-9]*)\.(.+)\.weight$")


@dataclass(frozen=True)
class Override:
    pattern: str  # as llama-quantize stores it: lowercase-invariant, anchored
    type: T
    sets: tuple[str, ...]  # the tensors whose type this override changes, in processing order
    type_name: str = ""  # the name the family's option matches exactly (ik: ggml_type_name); "" lowercase

    @property
    def spec(self) -> str:
        return f"{self.pattern}={self.type_name or self.type.name.lower()}"


@dataclass(frozen=True)
class Inexpressible:
    name: str
    policy_type: T
    stock_type: T
    reason: str


@dataclass
class Export:
    plan: Plan  # the policy's plan: what the patched binary writes
    stock: Plan  # stock llama-quantize without overrides
    check: Plan  # stock llama-quantize with the exported overrides (the self-check)
    overrides: tuple[Override, ...]
    inexpressible: tuple[Inexpressible, ...]

    @property
    def tensor_types(self) -> tuple[tuple[str, T], ...]:
        return tuple((o.pattern, o.type) for o in self.overrides)

    @property
    def complete(self) -> bool:
        return not self.inexpressible


class ExportBug(AssertionError):
    """The self-check found a tensor the exported list gets wrong: a bug in qpatch, not in the input."""


def export(target: Plan) -> Export:
    """The overrides that make stock llama-quantize write `target` (a policy's plan), checked."""
    o = target.options
    if o.any_given:
        raise UsageError("export takes a plan without command-line type options (--tensor-type, --pure, ...)")
    if target.errors:
        more = f" (and {len(target.errors) - 1} more)" if len(target.errors) > 1 else ""
        raise QuantizeError(f"the patched llama-quantize would fail on this job, so there is nothing to export: "
                            f"{target.errors[0]}{more}")
    family = target.family
    stock = loader.stock()
    base = plan(target.model, stock, o, family, target.pin)
    targets: dict[str, T] = {}  # every tensor the list can reach -> the policy's type
    need: dict[str, T] = {}  # those where stock differs
    lost: list[Inexpressible] = []
    for p, s in zip(target.tensors, base.tensors):
        if not s.chosen:
            continue  # no type choice at all, for stock and policy alike
        try:
            reached = family.override_result(s, p.type)
        except ValueError:
            reached = None
        if reached != p.type:
            if p.type != s.type:
                lost.append(Inexpressible(p.name, p.type, s.type, family.unreachable_reason(s, p.type)))
            continue
        targets[p.name] = p.type
        if p.type != s.type:
            need[p.name] = p.type
    # An override that replaces the mix also skips stock's counters (first-match families), which can move
    # later tensors' stock choices: those need overrides too, until nothing moves.
    for _ in range(len(target.tensors) + 1):
        overrides = _minimise(target.model, targets, need)
        given = dataclasses.replace(o, overrides=tuple((v.pattern, v.type) for v in overrides))
        check = plan(target.model, stock, given, family, target.pin)
        moved = {c.name: targets[c.name] for p, c in zip(target.tensors, check.tensors)
                 if c.name in targets and c.name not in need and c.type != p.type}
        if not moved:
            break
        need.update(moved)
    lost += _stock_aborts(target, base, check, {i.name for i in lost})
    _self_check(target, check, overrides, {i.name for i in lost})
    order = {t.name: i for i, t in enumerate(target.model.tensors)}
    lost.sort(key=lambda i: order[i.name])
    if family.overrides.exact_type_names:  # e.g. ik matches ggml_type_name exactly (q4_K, iq4_ks)
        overrides = tuple(dataclasses.replace(v, type_name=family.catalogue.ggml_name(v.type)) for v in overrides)
    return Export(target, base, check, overrides, tuple(lost))


def _stock_aborts(target: Plan, base: Plan, check: Plan, known: set[str]) -> list[Inexpressible]:
    """Tensors on which stock llama-quantize aborts, with or without the list, and the patched binary does not."""
    policy_type = {t.name: t.type for t in target.tensors}
    stock_type = {t.name: t.type for t in check.tensors}
    out = []
    for e in check.errors:
        name, _, msg = e.partition(": ")
        if name not in policy_type or e not in base.errors:
            raise ExportBug(f"stock llama-quantize would refuse the job with the exported list: {e}")
        if name not in known:
            known.add(name)
            out.append(Inexpressible(name, policy_type[name], stock_type[name],
                                     f"stock llama-quantize aborts here ({msg}); the policy does not, "
                                     f"and no override changes that"))
    return out


def _self_check(target: Plan, check: Plan, overrides, lost: set[str]):
    wrong = [f"{p.name}: policy {p.type.name}, stock with the list {c.type.name}"
             for p, c in zip(target.tensors, check.tensors) if p.type != c.type and p.name not in lost]
    if wrong:
        raise ExportBug(f"export self-check failed for {len(wrong)} tensor(s), e.g. {wrong[0]}; list: "
                        + " ".join(o.spec for o in overrides))
    for o in overrides:
        if o.pattern != o.pattern.lower() or "=" in o.pattern or "," in o.pattern:
            raise ExportBug(f"pattern {o.pattern!r} would not survive llama-quantize's parsing")


# ----------------------------------------------------------------------- minimisation


def _minimise(model: ModelFacts, targets: dict[str, T], need: dict[str, T]) -> tuple[Override, ...]:
    cells: dict[str, dict[int, str]] = {}  # kind -> block -> name, every blk tensor of the model
    for t in model.tensors:
        m = _BLK.match(t.name)
        if m:
            cells.setdefault(m.group(2), {})[int(m.group(1))] = t.name
    order = {t.name: i for i, t in enumerate(model.tensors)}
    out = []
    for typ in sorted(set(need.values()), key=lambda t: t.name):
        names = sorted((n for n, t in need.items() if t == typ), key=order.__getitem__)
        exact = [n for n in names if not _BLK.match(n)]
        if exact:
            out.append(Override(f"^{patterns.alternation(exact)}$", typ, tuple(exact)))
        req: dict[str, set[int]] = {}
        for n in names:
            m = _BLK.match(n)
            if m:
                req.setdefault(m.group(2), set()).add(int(m.group(1)))
        forbid = {k: {b for b, n in cells[k].items() if n in targets and targets[n] != typ} for k in req}
        for group in patterns.group_kinds(req, forbid):
            blocks = set().union(*(req[k] for k in group))
            bad = set().union(*(forbid[k] for k in group))
            pat = rf"^blk\.{patterns.blocks_pattern(blocks, bad)}\.{patterns.alternation(group)}\.weight$"
            sets = tuple(n for n in names if (m := _BLK.match(n)) and m.group(2) in group)
            out.append(Override(pat, typ, sets))
    out.sort(key=lambda v: (order[v.sets[0]], v.type.name))
    return tuple(out)


# ---------------------------------------------------------------------------- output


def describe_lost(lost: tuple[Inexpressible, ...]) -> list[str]:
    """Inexpressible tensors grouped by kind over blocks: `blk.[0-9].attn_k_b: policy q8_0, stock iq4_nl (why)`."""
    groups: dict[tuple[str, T, T, str], list[Inexpressible]] = {}
    for i in lost:
        m = _BLK.match(i.name)
        key = (m.group(2) if m else i.name, i.policy_type, i.stock_type, i.reason)
        groups.setdefault(key, []).append(i)
    lines = []
    for (kind, p, s, _), items in groups.items():
        blocks = sorted(int(m.group(1)) for i in items if (m := _BLK.match(i.name)))
        where = block_label(blocks, kind) if blocks else kind
        lines.append(f"{where}: policy {p.name.lower()}, stock {s.name.lower()} ({items[0].reason})")
    return lines


def format_recipe(ex: Export, fmt: str = "tensor-type", *, imatrix: str | None = None) -> str:
    """The list in one of FORMATS, exactly what its reader takes (`header` says what it is for: the CLI
    prints that on stderr). A model card is markdown for people, with everything in it."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format '{fmt}'", hint=f"formats: {', '.join(FORMATS)}")
    if fmt == "tensor-type-file":  # llama-quantize reads every word of the file as PATTERN=TYPE: no comments
        return "".join(f"{o.spec}\n" for o in ex.overrides)
    if fmt == "model-card":
        return model_card(ex, imatrix=imatrix)
    return "\n".join(_body(ex, fmt)) + "\n"


def _sets(names: tuple[str, ...]) -> str:
    """The tensors an override sets, as a reader checks them: kinds over block ranges."""
    from qpatch.gguf.model_facts import block_of, kind_of

    kinds: dict[str, list[int]] = {}
    for n in names:
        kinds.setdefault(kind_of(n), []).append(block_of(n))
    return ", ".join(k if b == [-1] else block_label(b, k) for k, b in kinds.items())


def model_card(ex: Export, *, imatrix: str | None = None) -> str:
    """A recipe block to paste into a model card: the command, what each override sets, the size of every
    group of tensors and the total."""
    from qpatch.predict.report import groups, human_bytes

    p = ex.plan
    total = p.total_bytes
    lines = [f"### Quantization: {p.options.ftype.name}, {human_bytes(total)}, {p.bpw:.3f} bpw", "",
             f"Made with llama.cpp {p.pin}'s stock `llama-quantize` and the overrides below (the mix of qpatch "
             f"policy `{p.policy.name}`, checked tensor by tensor with qpatch's model of that llama-quantize).", "",
             "```sh", "llama-quantize" + (f" --imatrix {shlex.quote(imatrix)}" if imatrix else "") + " \\"]
    args = p.family.overrides.spell([o.spec for o in ex.overrides])  # the family's flag, as it reads it
    lines += [f"  {flag} '{value}' \\" for flag, value in zip(args[::2], args[1::2])]
    out = f"{p.model.name.removesuffix('.gguf')}-{p.options.ftype.name}.gguf"
    lines += [f"  {shlex.quote(p.model.name)} {shlex.quote(out)} {p.options.ftype.name}", "```", ""]
    if ex.overrides:
        lines += ["| override | sets |", "|---|---|"]
        # a | inside a table cell ends the cell, even inside backticks: markdown wants it escaped
        lines += [f"| `{o.spec.replace('|', chr(92) + '|')}` | {_sets(o.sets)} |" for o in ex.overrides]
        lines.append("")
    lines += ["| tensors | type | n | size | share |", "|---|---|---:|---:|---:|"]
    for g in groups(p):
        if g.kept:
            continue
        share = f"{100 * g.nbytes / total:.1f} %"
        lines.append(f"| `{g.label}` | {g.type} | {g.count} | {human_bytes(g.nbytes)} | {share} |")
    kept = sum(t.nbytes for t in p.tensors if t.status is Status.KEPT)
    if kept:
        lines.append(f"| norms, biases, router | as converted | | {human_bytes(kept)} | {100 * kept / total:.1f} % |")
    lines.append(f"| **total** | | {len(p.tensors)} | **{human_bytes(total)}** | {p.bpw:.3f} bpw |")
    if ex.inexpressible:
        lines += ["", f"{len(ex.inexpressible)} tensor(s) keep stock's type (the overrides cannot reach them): "
                  + "; ".join(describe_lost(ex.inexpressible))]
    return "\n".join(lines) + "\n"


def header(ex: Export, *, imatrix: str | None = None) -> list[str]:
    """`#` lines naming what a list is for, its count, and what it cannot express."""
    p = ex.plan
    n_set = sum(len(o.sets) for o in ex.overrides)
    lines = [
        f"# qpatch export: policy {p.policy.name} for {p.model.name} at {p.options.ftype.name}, "
        f"imatrix {imatrix or ('yes' if p.options.has_imatrix else 'none')}, stock llama-quantize {p.pin}",
        f"# {len(ex.overrides)} override{'s' if len(ex.overrides) != 1 else ''} setting {n_set} "
        f"tensor{'s' if n_set != 1 else ''}; checked with qpatch's model of stock llama-quantize",
    ]
    if ex.inexpressible:
        lines.append(f"# PARTIAL: {len(ex.inexpressible)} tensor(s) cannot be expressed and keep stock's type:")
        lines += [f"#   {d}" for d in describe_lost(ex.inexpressible)]
    return lines


def _body(ex: Export, fmt: str) -> list[str]:
    if fmt == "tensor-type":
        return [f"--tensor-type '{o.spec}' \\" for o in ex.overrides]
    return [",".join(o.spec for o in ex.overrides)] if ex.overrides else []
