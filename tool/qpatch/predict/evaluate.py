"""The prediction's shared parts: llama-quantize's options, the plan, and a policy's Python meaning.

How a pin's llama-quantize combines stock choice, the policy, the shape fallback and the
command-line options differs by pin family: each family's `predict.py` walks the tensors in
its order and calls `policy_choice` where its hook calls the generated `qpatch::choose`.
`plan()` is given the family (the caller maps a pin to it: families/pins.py). Each tensor's result
names the rule that decided it.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qpatch.errors import UsageError
from qpatch.gguf.catalogue import Catalogue, Ftype, T
from qpatch.gguf.model_facts import ModelFacts, block_of, kind_of
from qpatch.policy.model import (
    After, AllOf, AnyOf, Arch, AtLeast, Before, Block, ByFtype, Default, Experts, Ftypes, Gqa, Imatrix, Keep, Not,
    Policy, RowMultiple, Rule, Set, Stacked, Step, UseMoreBits,
)

if TYPE_CHECKING:
    from qpatch.families import Family


@dataclass(frozen=True)
class Options:
    """llama-quantize's options that change type choice."""

    ftype: Ftype
    imatrix: dict[str, int] | None = None  # entry name -> length; None: no --imatrix
    output_tensor_type: T | None = None
    token_embedding_type: T | None = None
    tensor_types: tuple[tuple[str, T], ...] = ()  # (lowercased pattern, type), in order
    pure: bool = False
    leave_output_tensor: bool = False
    prune_layers: tuple[int, ...] = ()  # sorted, unique block numbers
    # per-kind type options of families that have them (ik_llama.cpp's --attn-v-type ...): (option, type)
    kind_types: tuple[tuple[str, T], ...] = ()
    ignore_imatrix_rules: bool = False  # ik_llama.cpp's --ignore-imatrix-rules

    @property
    def has_imatrix(self) -> bool:
        return bool(self.imatrix)


class Status(enum.Enum):
    """What llama-quantize does with a tensor: what reports and export read, rather than the rule's words."""

    QUANTIZED = "quantized"  # converted to `type` (which may be its source type only through an override)
    KEPT = "kept"  # not quantizable (norms, biases, router weights...): written as it is
    COPIED = "copied"  # the COPY ftype: every tensor written as it is
    SAME_TYPE = "same type"  # the chosen type is the source type: written as it is


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    src_type: T
    type: T
    rule: str
    status: Status
    nbytes: int
    fell_back: bool = False  # the shape fallback replaced the chosen type
    chosen: bool = False  # went through type choice (quantizable, quantized default type, no --pure)

    @property
    def quantized(self) -> bool:
        return self.status is Status.QUANTIZED


@dataclass
class Plan:
    model: ModelFacts
    policy: Policy
    pin: str
    options: Options
    family: "Family | None" = None  # whose llama-quantize the plan predicts (its flags, its catalogue)
    tensors: list[TensorPlan] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what would make llama-quantize abort
    # the subset of `errors` that a --dry-run does not reach (imatrix checks, writing the data)
    real_run_only: list[str] = field(default_factory=list)
    # what is legal but probably not what the user meant: a policy for another architecture, rules that
    # select no tensor of this model, an imatrix that does not fit it
    warnings: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def n_elements(self) -> int:
        total = 0
        for t in self.tensors:
            n = 1
            for d in t.shape:
                n *= d
            total += n
        return total

    @property
    def bpw(self) -> float:
        n = self.n_elements
        return 8.0 * self.total_bytes / n if n else 0.0

    def types(self) -> dict[str, str]:
        return {t.name: t.type.name for t in self.tensors}


def parse_tensor_type(spec: str, catalogue: Catalogue, flag: str = "--tensor-type") -> tuple[str, T]:
    """`PATTERN=TYPE` as llama-quantize parses it: the pattern is lowercased. `flag`: the option it came with."""
    if "=" not in spec:
        raise UsageError(f"malformed {flag} '{spec}' (expected PATTERN=TYPE)")
    pat, _, typ = spec.partition("=")
    if not pat:
        raise UsageError(f"{flag} '{spec}': missing tensor name")
    if not typ:
        raise UsageError(f"{flag} '{spec}': missing quantization type")
    pat = pat.lower()
    try:
        re.compile(pat)
    except re.error as e:
        raise UsageError(f"{flag} '{spec}': bad regex: {e}") from None
    return pat, catalogue.parse_type(typ, what=f"type in {flag}")


def parse_prune_layers(spec: str) -> tuple[int, ...]:
    """`--prune-layers L0,L1,...` as llama-quantize parses it: non-negative ints, sorted, unique."""
    out = []
    for part in spec.split(","):
        try:
            i = int(part)
        except ValueError:
            i = -1
        if i < 0:
            raise UsageError(f"--prune-layers: invalid layer id '{part}'")
        out.append(i)
    return tuple(sorted(set(out)))


def ggml_n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: trailing dimensions of size 1 do not count, so ne (4096, 1) is 1-D."""
    n = len(shape)
    while n > 1 and shape[n - 1] == 1:
        n -= 1
    return max(n, 1)


# ------------------------------------------------------------------ policy evaluation


class Positions:
    """Ordinals of every tensor in every frame a policy uses (precomputed, like the C++ pre-pass)."""

    def __init__(self, model: ModelFacts):
        self.model = model
        self.names = [t.name for t in model.tensors]
        self.kinds = [kind_of(n) for n in self.names]
        self.index = {n: i for i, n in enumerate(self.names)}
        self._own: list[int] | None = None
        self._own_count: dict[str, int] = {}
        self._groups: dict[tuple[str, ...], tuple[dict[str, int], int]] = {}

    def _own_ordinals(self):
        if self._own is None:
            counts: dict[str, int] = {}
            own = []
            for k in self.kinds:
                own.append(counts.get(k, 0))
                counts[k] = counts.get(k, 0) + 1
            self._own, self._own_count = own, counts
        return self._own, self._own_count

    def position(self, frame, name: str) -> tuple[int, int] | None:
        if isinstance(frame, Block):
            i = block_of(name)
            return None if i < 0 else (i, self.model.n_layer)
        idx = self.index[name]
        kind = self.kinds[idx]
        if frame.kinds is None:
            own, counts = self._own_ordinals()
            k, n = own[idx], counts[kind]
        else:
            if kind not in frame.kinds:
                return None
            if frame.kinds not in self._groups:
                ords, c = {}, 0
                for nm, kd in zip(self.names, self.kinds):
                    if kd in frame.kinds:
                        ords[nm] = c
                        c += 1
                self._groups[frame.kinds] = (ords, c)
            ords, n = self._groups[frame.kinds]
            k = ords[name]
        if frame.n == "blocks":
            n = self.model.n_layer
        return k, n


def _cdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


_OPS = {"==": int.__eq__, "!=": int.__ne__, ">=": int.__ge__, ">": int.__gt__, "<=": int.__le__, "<": int.__lt__}


@dataclass
class Ctx:
    name: str
    kind: str
    shape: tuple[int, ...]
    model: ModelFacts
    ftype: str
    has_imatrix: bool
    stock: T
    default: T
    pos: Positions
    site: str = "other"  # which of stock's rule sites decides this tensor on the pin (Select(stock=...))


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits with C integer semantics (truncating division and modulo)."""
    return i < n // 8 or i >= 7 * n // 8 or _cmod(i - n // 8, 3) == 2


def _cmod(a: int, b: int) -> int:
    r = abs(a) % abs(b)
    return -r if a < 0 else r


def eval_cond(c, x: Ctx) -> bool:
    if isinstance(c, (Before, AtLeast, After, UseMoreBits)):
        p = x.pos.position(c.frame, x.name)
        if p is None:
            return False
        k, n = p
        if isinstance(c, UseMoreBits):
            return use_more_bits(k, n)
        bound = _cdiv(c.num * n, c.den)
        return k < bound if isinstance(c, Before) else k >= bound if isinstance(c, AtLeast) else k > bound
    if isinstance(c, Experts):
        return _OPS[c.op](x.model.n_expert, c.value)
    if isinstance(c, Gqa):
        return _OPS[c.op](x.model.n_gqa, c.value)
    if isinstance(c, Imatrix):
        return x.has_imatrix == c.present
    if isinstance(c, Ftypes):
        return x.ftype in c.names
    if isinstance(c, Arch):
        return x.model.arch in c.names
    if isinstance(c, RowMultiple):
        return x.shape[0] % c.n == 0
    if isinstance(c, Stacked):
        return len(x.shape) > 2 and x.shape[2] > 1
    if isinstance(c, Not):
        return not eval_cond(c.cond, x)
    if isinstance(c, AnyOf):
        return any(eval_cond(d, x) for d in c.conds)
    if isinstance(c, AllOf):
        return all(eval_cond(d, x) for d in c.conds)
    raise TypeError(f"no Python meaning for condition {c!r}")


def eval_action(a, x: Ctx) -> T:
    if isinstance(a, Set):
        return a.type
    if isinstance(a, ByFtype):
        for f, t in a.table:
            if f == x.ftype:
                return t
        return a.otherwise if a.otherwise is not None else x.stock
    if isinstance(a, Step):
        if x.stock not in a.ladder:
            return x.stock
        i = a.ladder.index(x.stock) + a.by
        return a.ladder[max(0, min(len(a.ladder) - 1, i))]
    if isinstance(a, Default):
        return x.default
    if isinstance(a, Keep):
        return x.stock
    raise TypeError(f"no Python meaning for action {a!r}")


def selects(r: Rule, x: Ctx) -> bool:
    s = r.select
    if s.kinds:
        return x.kind in s.kinds
    if s.contains:
        return s.contains in x.name
    if s.stock:
        return x.site == s.stock
    return re.search(s.pattern, x.name) is not None


def why(r: Rule, x: Ctx) -> str:
    """The deciding rule as a plan shows it: its file:line, and what a Step did when it could not step."""
    if isinstance(r.then, Step) and x.stock not in r.then.ladder:
        return f"{r.source} (Step: stock's {x.stock.name} is off the ladder, kept)"
    return r.source


def policy_choice(policy: Policy, x: Ctx) -> tuple[T, Rule | None]:
    if policy.archs and x.model.arch not in policy.archs:
        return x.stock, None
    for r in policy.rules:
        if selects(r, x) and all(eval_cond(c, x) for c in r.when):
            return eval_action(r.then, x), r
    return x.stock, None


# --------------------------------------------------------------------------- the plan


def plan(model: ModelFacts, policy: Policy, opts: Options, fam: "Family", pin: str) -> Plan:
    """Predict every tensor's type on `pin`, of family `fam`. Conditions under which llama-quantize aborts
    go to `errors`."""
    effective = for_family(policy, fam.name)
    check_types(policy, fam.catalogue, pin)
    p = fam.plan(model, effective, opts)
    p.policy = policy
    p.pin = pin
    p.family = fam
    p.warnings = p.warnings + plan_warnings(model, effective, opts, p)  # the family's own first
    if effective is not policy:
        p.warnings.insert(0, f"policy {policy.name} is written for pin families {', '.join(policy.families)}; on pin "
                             f"{pin} (family {fam.name}) it keeps stock's choices")
    return p


def for_family(policy: Policy, family: str) -> Policy:
    """The policy as a pin of `family` runs it: itself, or, outside its `families`, stock's choices."""
    if not policy.families or family in policy.families:
        return policy
    return dataclasses.replace(policy, rules=(), fallback=None, missing_imatrix="abort", imatrix_mismatch="abort")


def types_named(policy: Policy) -> list[tuple[str, T]]:
    """(rule's file:line, type) for every ggml type a policy's actions name; fallback targets too (a
    fallback entry *from* a type the pin lacks never fires, so only its target must exist)."""
    out = []
    for r in policy.rules:
        a = r.then
        if isinstance(a, Set):
            out.append((r.source, a.type))
        elif isinstance(a, ByFtype):
            out += [(r.source, t) for _, t in a.table] + ([(r.source, a.otherwise)] if a.otherwise is not None else [])
        elif isinstance(a, Step):
            out += [(r.source, t) for t in a.ladder]
    out += [(f"{policy.source} (fallback)", b) for _, b in policy.fallback or ()]
    return out


def check_types(policy: Policy, catalogue: Catalogue, pin: str) -> None:
    """A policy that names a ggml type the pin does not have is an error (it would not compile there), and so
    is one whose `pins` leave this pin out (plan, render, export and apply refuse it alike)."""
    from qpatch.errors import PolicyError

    if policy.pins and pin not in policy.pins:
        raise PolicyError(f"policy '{policy.name}' is for pin(s) {', '.join(policy.pins)}, not {pin}",
                          hint=f"pass --pin {policy.pins[0]}, or add {pin} to its pins=(...) in {policy.source}")

    for source, t in types_named(policy):
        if not catalogue.has_type(t) and t not in (T.F32, T.F16, T.BF16):
            raise PolicyError(f"{source}: names ggml type {t.name}, which pin {pin} (family {catalogue.family}) "
                              f"does not have")


def known_kinds() -> frozenset[str]:
    """Tensor kinds llama.cpp names (gguf-py's table, `blk.{bid}.` dropped): a kind outside it is a typo."""
    from qpatch.gguf.constants import TENSOR_NAMES  # without importing gguf (and numpy): ~0.14 s

    return frozenset(v.replace("blk.{bid}.", "") for v in TENSOR_NAMES.values())


def plan_warnings(model: ModelFacts, policy: Policy, opts: Options, p: Plan) -> list[str]:
    from qpatch.gguf.model_facts import kind_of

    out = []
    kinds = {kind_of(t.name) for t in model.tensors}
    known = known_kinds() | kinds
    for r in policy.rules:
        for k in r.select.kinds:
            if k not in known:
                out.append(f"{r.source}: '{k}' is no tensor kind llama.cpp knows (a typo?)")
    if policy.archs and model.arch not in policy.archs:
        out.append(f"policy {policy.name} is for {', '.join(policy.archs)}; this model is {model.arch}: "
                   "it changes nothing here")
    elif policy.rules:  # rules for other layouts are normal (deepseek-v3 covers attn_kv_b and attn_k_b/v_b);
        names = [t.name for t in model.tensors]  # a policy none of whose rules finds a tensor is not

        def hits(sel) -> bool:
            if sel.stock:  # a stock site: which tensors reach it is the family's business
                return True
            return (any(k in kinds for k in sel.kinds) if sel.kinds else
                    any(sel.contains in n for n in names) if sel.contains else
                    any(re.search(sel.pattern, n) for n in names))

        if not any(hits(r.select) for r in policy.rules):
            out.append(f"none of policy {policy.name}'s {len(policy.rules)} rule(s) selects a tensor of this model")
    # the policy's missing_imatrix="q8_0" answer: one note per row says so; the total belongs in a warning
    to_q8 = [t for t in p.tensors if "no imatrix" in t.rule and "-> Q8_0" in t.rule]
    if to_q8:
        share = sum(t.nbytes for t in to_q8) / max(1, p.total_bytes)
        out.append(f"{len(to_q8)} tensor(s), {100 * share:.0f} % of the file, are Q8_0 instead of "
                   f"{p.options.ftype.name}'s types: they need an imatrix"
                   f"{' entry' if opts.imatrix is not None else ''} and policy {policy.name} answers a missing one "
                   "with Q8_0 (pass --imatrix)")
    if opts.imatrix is not None:
        chosen = [t for t in p.tensors if t.chosen]
        missing = [t.name for t in chosen if t.name not in opts.imatrix]
        wrong = [t.name for t in chosen if t.name in opts.imatrix
                 and opts.imatrix[t.name] != t.shape[0] * (t.shape[2] if len(t.shape) > 2 else 1)]
        if missing or wrong:
            out.append(f"the imatrix has no entry for {len(missing)} and an entry of another length for {len(wrong)} "
                       f"of the {len(chosen)} tensors quantized (e.g. {(missing or wrong)[0]}): is it this model's?")
    return out


def fallback_table(policy: Policy, model: ModelFacts, stock_table: dict[T, T]) -> dict[T, T] | None:
    """The shape-fallback table a targeted policy installs: its entries override stock's."""
    targeted = not policy.archs or model.arch in policy.archs
    if policy.fallback is None or not targeted:
        return None
    return {**stock_table, **dict(policy.fallback)}
