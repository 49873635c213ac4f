"""`qpatch import`: a recipe a quant maker already has, as a policy file, with its round trip proven.

Three kinds of recipe:
- `--tensor-type PATTERN=TYPE` lines (or a `--tensor-type-file`), as stock llama-quantize takes them;
- an ik_llama.cpp `--custom-q "REGEX=TYPE,REGEX=TYPE"` string (types must exist on the pin);
- an existing quantized GGUF: the types it has.

Overrides become rules in their order (`Select(pattern=...)`: searched in the name, first match
wins, as llama-quantize does). A GGUF's types become rules only where they differ from what stock
chooses, one per (kind, type) over block ranges (`in_blocks("ffn_down_exps", "3-5,9")`).

The round trip: the imported policy is planned on the model and compared, tensor for tensor,
with the recipe's effect (stock + the overrides, as qpatch's model of that pin's llama-quantize
predicts it) or with the GGUF's types. Where they differ (an override on the current pin skips
stock's counters, so stock may choose otherwise for tensors it does not name), a rule for those
tensors is added and the check repeats; the file says which rules are such fix-ups. An import that
cannot be made exact is an error, and no file is written.
"""

from __future__ import annotations

import dataclasses
import keyword
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from qpatch import files
from qpatch.errors import PolicyError, UsageError
from qpatch.families.pins import family_of
from qpatch.gguf.catalogue import T
from qpatch.gguf.model_facts import block_of, kind_of, read_model
from qpatch.job import Job
from qpatch.policy import loader
from qpatch.policy.blocks import in_blocks
from qpatch.policy.model import Policy, Select, Set, rule
from qpatch.predict.plan import Plan
from qpatch.predict.report import block_ranges

MAX_ROUNDS = 4


@dataclass(frozen=True)
class Line:
    """One rule of the policy file being written: its selector (as Python source and as the object),
    the type, why it is there."""

    source: str
    select: Select
    type: T
    comment: str = ""

    def code(self) -> str:
        return f"    rule({self.source}, T.{self.type.name}),{'  # ' + self.comment if self.comment else ''}"

    def rule(self):
        return rule(self.select, Set(self.type))

    def with_comment(self, comment: str) -> "Line":
        return Line(self.source, self.select, self.type, comment)


def _kind_line(kind: str, blocks: list[int], all_blocks: list[int], typ: T) -> Line:
    if not blocks or blocks == all_blocks:
        return Line(repr(kind), Select(kinds=(kind,)), typ)
    spec = block_ranges(sorted(blocks))
    return Line(f"in_blocks({kind!r}, {spec!r})", in_blocks(kind, spec), typ)


def lines_from_overrides(specs: list[str], pin: str, flag: str | None = None) -> list[Line]:
    """One rule per override, read as the pin's llama-quantize reads its flag (ik: case-sensitive --custom-q);
    `flag`: the option the user gave them with, for messages."""
    fam = family_of(pin)
    out = []
    for spec in specs:
        [(pat, t)] = fam.overrides.read([spec], fam.catalogue, flag or fam.overrides.flag)
        out.append(Line(f"Select(pattern={pat!r})", Select(pattern=pat), t, f"{fam.overrides.flag} {spec}"))
    return out


def parse_custom_q(text: str) -> list[str]:
    """ik_llama.cpp's `--custom-q "REGEX=TYPE,REGEX=TYPE"` as PATTERN=TYPE specs."""
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise UsageError("--custom-q: no REGEX=TYPE entries")
    return specs


def lines_from_types(want: dict[str, T], stock: Plan) -> list[Line]:
    """Rules for the tensors whose wanted type differs from stock's: per kind, per type, over blocks."""
    differ: dict[str, dict[T, list[int]]] = {}
    for t in stock.tensors:
        if t.chosen and t.name in want and want[t.name] != t.type:
            differ.setdefault(kind_of(t.name), {}).setdefault(want[t.name], []).append(block_of(t.name))
    blocks_of_kind: dict[str, list[int]] = {}
    for t in stock.tensors:
        blocks_of_kind.setdefault(kind_of(t.name), []).append(block_of(t.name))
    out = []
    for kind in sorted(differ, key=lambda k: min(b for bs in differ[k].values() for b in bs)):
        for typ, blocks in sorted(differ[kind].items(), key=lambda kv: min(kv[1])):
            blocks = [] if blocks == [-1] else blocks
            out.append(_kind_line(kind, blocks, sorted(blocks_of_kind[kind]), typ))
    return out


@dataclass(frozen=True)
class Imported:
    name: str
    path: Path
    rules: int
    fixups: int
    checked: int  # tensors compared in the round trip
    what: str  # the recipe's effect, or the GGUF's types


def import_policy(name: str, *, model, ftype: str | None = None, overrides: list[str] | None = None,
                  gguf=None, pin: str, out_dir: Path, force: bool = False, imatrix=None,
                  command: str = "", recipe_flag: str | None = None) -> Imported:
    if not re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", name) or keyword.iskeyword(name.replace("-", "_")):
        raise UsageError(f"policy name '{name}': use lower-case words joined by '-' (e.g. my-recipe)")
    path = Path(out_dir) / f"{name.replace('-', '_')}.py"
    if path.exists() and not force:
        raise UsageError(f"{path} exists", hint="pass --force to overwrite it")
    if (loader.shipped_dir() / path.name).is_file() and not force:
        raise UsageError(f"'{name}' is a policy qpatch ships: {path} would hide it wherever {out_dir} is on the "
                         "search path", hint="choose another name, or pass --force to hide the shipped one")
    stock = loader.stock()
    if gguf is not None:
        quant = read_model(gguf, family_of(pin).name)  # type ids in the pin's numbering
        ftype = ftype or _ftype_of(quant, pin, gguf)
        job = Job.create(model or gguf, ftype, policy=stock, pin=pin, imatrix=imatrix)
        base = job.plan()
        want = {t.name: t.type for t in quant.tensors}
        lines = lines_from_types(want, base)
        what, same_as = f"the types of {Path(gguf).name}", Path(gguf).name
        target = {t.name: want.get(t.name, t.type) for t in base.tensors}
    else:
        if not overrides:
            raise UsageError("nothing to import: give --tensor-type, --tensor-type-file, --custom-q or --gguf")
        if not ftype:
            raise UsageError("importing overrides needs --ftype: the ftype the recipe is used with")
        lines = lines_from_overrides(overrides, pin, recipe_flag)
        job = Job.create(model, ftype, policy=stock, pin=pin, imatrix=imatrix)
        fam = job.family
        recipe = fam.overrides.read(list(overrides), fam.catalogue, fam.overrides.flag)  # as its flag reads them
        effect = dataclasses.replace(job, options=dataclasses.replace(job.options, overrides=recipe)).plan()
        what, same_as = "the recipe's effect on stock llama-quantize", "stock llama-quantize given the recipe"
        target = {t.name: t.type for t in effect.tensors}
    fixups = 0
    for _ in range(MAX_ROUNDS):
        pol = Policy(name=name, summary=f"imported: {what}", rules=tuple(ln.rule() for ln in lines))
        got = job.with_policy(pol).plan()
        wrong = {t.name: target[t.name] for t in got.tensors if t.type != target[t.name]}
        if not wrong:
            break
        fix = lines_from_types(wrong, got)
        fixups += len(fix)
        lines = [ln.with_comment("fix-up: under the recipe stock chooses this here (an override skips stock's "
                                 "counters)") for ln in fix] + lines
    else:
        raise PolicyError(f"the import does not round-trip: {len(wrong)} tensor(s) still differ "
                          f"(e.g. {next(iter(wrong))}); no file written")
    text = _source(name, what, same_as, ftype, Path(model or gguf).name, pin, lines, command)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise files.cannot_write(path, e) from None
    files.write_text(path, text)
    return Imported(name, path, len(lines), fixups, len(got.tensors), what)


def _ftype_of(quant, pin: str, gguf) -> str:
    cat = family_of(pin).catalogue
    ft = cat.ftype_by_id(quant.file_type) if quant.file_type is not None else None
    if ft is None:
        raise UsageError(f"{gguf}: no general.file_type this pin knows; pass --ftype")
    return ft.name


def _source(name: str, what: str, same_as: str, ftype: str, model: str, pin: str, lines: list[Line],
            command: str) -> str:
    body = "\n".join(ln.code() for ln in lines) or "    # stock already gives every tensor its type"
    uses = ["Policy", "T", "rule"] + (["Select"] if any("Select(" in ln.source for ln in lines) else [])
    helpers = "from qpatch.policy.blocks import in_blocks\n" if any("in_blocks(" in ln.source for ln in lines) else ""
    doc = textwrap.fill(f"Round trip proven at import: planned on {model} at {ftype} (pin {pin}), this policy gives "
                        f"every tensor the same type as {same_as}. Rules are tried in order; the first that selects "
                        "a tensor sets its type; tensors no rule selects keep stock's choice.", 100)
    return f'''"""{name}: imported by `qpatch import` from {what}.

{doc}

Regenerate: {command or "qpatch import " + name + " ..."}
"""

from qpatch.policy.model import {", ".join(sorted(uses))}
{helpers}
RULES = (
{body}
)

POLICY = Policy(name={name!r}, summary={("imported: " + what)!r}, rules=RULES)
'''
