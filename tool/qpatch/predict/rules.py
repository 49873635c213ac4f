"""A policy's Python meaning: which rule decides a tensor, and the type it gives (what the generated
`qpatch::choose` computes in C++). A family's walk calls `policy_choice` where its hook calls the
generated function, with a `Ctx` of what that hook sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qpatch.gguf.catalogue import T
from qpatch.gguf.model_facts import ModelFacts, block_of, kind_of
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
    Policy,
    RowMultiple,
    Rule,
    Set,
    Stacked,
    Step,
    UseMoreBits,
)


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

    def _own_ordinals(self) -> tuple[list[int], dict[str, int]]:
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
    return re.search(s.pattern or "", x.name) is not None


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




def fallback_table(policy: Policy, model: ModelFacts, stock_table: dict[T, T]) -> dict[T, T] | None:
    """The shape-fallback table a targeted policy installs: its entries override stock's."""
    targeted = not policy.archs or model.arch in policy.archs
    if policy.fallback is None or not targeted:
        return None
    return {**stock_table, **dict(policy.fallback)}
