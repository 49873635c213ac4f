"""Render a policy to the C++ header that the hook patch includes into src/llama-quant.cpp.

Each condition and action class gets its C++ meaning here (its Python meaning is in
predict/rules.py); the file's shape is in templates/policy.h.j2. Output is deterministic:
no timestamps, rules in policy order, frames and groups in first-use order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from qpatch import files
from qpatch.errors import PolicyError
from qpatch.families.base import Family
from qpatch.families.pins import family_of
from qpatch.gguf.catalogue import Catalogue, T
from qpatch.policy.model import (
    After,
    AllOf,
    AnyOf,
    Arch,
    AtLeast,
    Before,
    Block,
    ByFtype,
    Default,
    Experts,
    Ftypes,
    Gqa,
    Imatrix,
    Keep,
    Not,
    Ordinal,
    Policy,
    RowMultiple,
    Set,
    Stacked,
    Step,
    UseMoreBits,
)
from qpatch.predict.engine import check_types, for_family

GENERATED_PATH = "src/llama-quant-qpatch.h"
TEMPLATES = Path(__file__).parent / "templates"


def ggml(t: T) -> str:
    return f"GGML_TYPE_{t.name}"


def _str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Frames:
    """Collects the position frames a policy uses; each becomes one `pos` variable."""

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue
        self.frames: list = []
        self.groups: list[tuple[str, ...]] = []
        self.ftype_groups: dict[str, tuple[str, ...]] = {}  # labelled Ftypes -> one named predicate each

    def llama_ftype(self, name: str) -> str:
        return f"LLAMA_FTYPE_{self.catalogue.by_name[name].enum}"

    def ftypes(self, c: Ftypes) -> str:
        # a policy may name ftypes of other families; this pin's switch lists only its own
        names = tuple(n for n in c.names if n in self.catalogue.by_name)
        if not c.label:
            return "(" + (" || ".join(f"ftype == {self.llama_ftype(n)}" for n in names) or "false") + ")"
        ident = "ftype_" + "".join(ch if ch.isalnum() else "_" for ch in c.label)
        if self.ftype_groups.setdefault(ident, names) != names:
            raise ValueError(f"two ftype groups are labelled '{c.label}'")
        return f"{ident}(ftype)"

    def var(self, frame) -> str:
        if frame not in self.frames:
            self.frames.append(frame)
            if isinstance(frame, Ordinal) and frame.kinds is not None and frame.kinds not in self.groups:
                self.groups.append(frame.kinds)
        return f"p{self.frames.index(frame)}"

    def expr(self, frame) -> str:
        if isinstance(frame, Block):
            return "pos{ block_of(name) >= 0, block_of(name), n_layer }"
        n_blocks = frame.n == "blocks"
        if frame.kinds is None:
            n = "n_layer" if n_blocks else "st.count.at(kind)"
            return f"pos{{ true, st.ordinal.at(name), {n} }}"
        g = self.groups.index(frame.kinds)
        n = "n_layer" if n_blocks else f"st.group_count[{g}]"
        return (f"in_group_{g}(kind) ? pos{{ true, st.group_ordinal[{g}].at(name), {n} }} "
                f": pos{{ false, 0, 0 }}")


_CMP = {"==", "!=", ">=", ">", "<=", "<"}


def cond_cpp(c, frames: _Frames) -> str:
    if isinstance(c, Before):
        return f"before({frames.var(c.frame)}, {c.num}, {c.den})"
    if isinstance(c, AtLeast):
        return f"at_least({frames.var(c.frame)}, {c.num}, {c.den})"
    if isinstance(c, After):
        return f"after({frames.var(c.frame)}, {c.num}, {c.den})"
    if isinstance(c, UseMoreBits):
        return f"more_bits({frames.var(c.frame)})"
    if isinstance(c, (Experts, Gqa)):
        if c.op not in _CMP:
            raise ValueError(f"{type(c).__name__}: operator {c.op!r} is not one of {', '.join(sorted(_CMP))}")
        return f"{'n_expert' if isinstance(c, Experts) else 'n_gqa'} {c.op} {int(c.value)}"
    if isinstance(c, Imatrix):
        return "has_imatrix" if c.present else "!has_imatrix"
    if isinstance(c, Ftypes):
        return frames.ftypes(c)
    if isinstance(c, Arch):
        return "(" + " || ".join(f"arch == {_str(a)}" for a in c.names) + ")"
    if isinstance(c, RowMultiple):
        return f"tensor->ne[0] % {int(c.n)} == 0"
    if isinstance(c, Stacked):
        return "tensor->ne[2] > 1"
    if isinstance(c, Not):
        return f"!({cond_cpp(c.cond, frames)})"
    if isinstance(c, AnyOf):
        return "(" + " || ".join(cond_cpp(d, frames) for d in c.conds) + ")"
    if isinstance(c, AllOf):
        return "(" + " && ".join(cond_cpp(d, frames) for d in c.conds) + ")"
    raise TypeError(f"no C++ meaning for condition {c!r}")


def select_cpp(sel) -> str:
    if sel.kinds:
        return "(" + " || ".join(f"kind == {_str(k)}" for k in sel.kinds) + ")"
    if sel.contains:
        return f"name.find({_str(sel.contains)}) != std::string::npos"
    if sel.stock:
        return f"stock_site(name) == std::string({_str(sel.stock)})"
    # ECMAScript regex (what llama-quantize's --tensor-type uses); compiled once per rule
    return f"[&] {{ static const std::regex re({_str(sel.pattern)}); return std::regex_search(name, re); }}()"


def action_cpp(a, ladders: list[tuple[str, ...]], frames: _Frames) -> str:
    if isinstance(a, Set):
        return f"return {ggml(a.type)};"
    if isinstance(a, ByFtype):
        cases = " ".join(f"case {frames.llama_ftype(f)}: return {ggml(t)};" for f, t in a.table
                         if f in frames.catalogue.by_name)
        other = ggml(a.otherwise) if a.otherwise is not None else "stock"
        return f"switch (ftype) {{ {cases} default: return {other}; }}"
    if isinstance(a, Step):
        lad = tuple(ggml(t) for t in a.ladder)
        if lad not in ladders:
            ladders.append(lad)
        i = ladders.index(lad)
        return f"return step(stock, {int(a.by)}, ladder_{i}, {len(lad)});"
    if isinstance(a, Default):
        return "return default_type(ftype);"
    if isinstance(a, Keep):
        return "return stock;"
    raise TypeError(f"no C++ meaning for action {a!r}")


@dataclass
class _RuleView:
    source: str
    select: str
    when_text: str
    then_text: str
    note: str
    cond: str
    action: str


def _env(family: Family) -> jinja2.Environment:
    # the family's template extends the shared one: both roots are searched, the shared one first
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(TEMPLATES), str(family.folder.parent)]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(policy: Policy, pin: str) -> str:
    """The generated header for `policy` on `pin`, through the template of the pin's family."""
    family = family_of(pin)
    cat = family.catalogue
    check_types(policy, cat, pin)
    written = policy
    policy = for_family(policy, family.name)
    frames = _Frames(cat)
    ladders: list[tuple[str, ...]] = []
    rules = []
    for r in policy.rules:
        try:
            parts = [select_cpp(r.select)] + [cond_cpp(c, frames) for c in r.when]
            action = action_cpp(r.then, ladders, frames)
        except (TypeError, ValueError) as e:  # a rule built in Python without the loader's checks
            raise PolicyError(f"{r.source}: {e}") from None
        rules.append(_RuleView(
            source=r.source, select=r.select.describe(), when_text=r.describe_when(),
            then_text=r.then.describe(), note=r.note, cond=" && ".join(parts), action=action,
        ))
    frame_views = [{"var": frames.var(f), "expr": frames.expr(f)} for f in frames.frames]
    defaults = [(frames.llama_ftype(f.name), ggml(f.default)) for f in cat.ftypes if not f.copy and f.quantizes]
    fb = ([(ggml(a), ggml(b)) for a, b in policy.fallback if cat.has_type(a) or a in (T.F32, T.F16, T.BF16)]
          if policy.fallback is not None else [])
    text = _env(family).get_template(family.template).render(
        policy=policy, family=family.name, command=f"qpatch render {policy.name} --pin {pin}",
        inert=policy is not written,
        rules=rules, frames=frame_views, groups=[{"kinds": g} for g in frames.groups], ladders=ladders,
        ftype_groups=[{"ident": i, "cases": [frames.llama_ftype(n) for n in names]}
                      for i, names in frames.ftype_groups.items()],
        defaults=defaults, fallback=fb,
    )
    return text


def is_generated(path: Path) -> bool:
    """Whether PATH starts with the banner every header rendered here starts with."""
    try:
        with open(path, "rb") as f:
            return f.read(len(GENERATED_MARK)) == GENERATED_MARK
    except OSError:
        return False


GENERATED_MARK = b"// @generated by qpatch"


def write_if_changed(path: Path, text: str) -> bool:
    """Write only when the content differs, so CMake rebuilds one translation unit at most."""
    path = Path(path)
    if path.exists() and path.read_bytes() == text.encode():
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise files.cannot_write(path, e) from None
    files.write_text(path, text)
    return True
