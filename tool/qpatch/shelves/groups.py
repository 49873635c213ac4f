"""Tensor groups: the unit a shelf's shards hold and `measure`/`fit` choose a type for.

A group is one tensor kind in one band of blocks (`bands:8`: block b of n is in band b*8//n), or one
kind over all blocks (`kind`), or one tensor (`tensor`). Tensors outside blocks (token_embd, output,
output_norm) are a group per kind. Tied kinds (`--tie ffn_up_exps,ffn_gate_exps`) share their groups,
so one choice covers both: ik_llama.cpp's fused MoE op needs up and gate of a block at one type.
Groups are listed in the model's processing order of their first tensor, so their order, names and
shard numbers are the same for every shelf of a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qpatch.errors import UsageError
from qpatch.gguf.model_facts import ModelFacts, block_of, kind_of

DEFAULT_SPEC = "bands:8"
_SPEC = re.compile(r"^(?:bands:(?P<bands>[1-9]\d*)|(?P<kind>kind)|(?P<tensor>tensor))$")


@dataclass(frozen=True)
class Group:
    name: str  # e.g. ffn_down_exps@3-9, ffn_gate_exps+ffn_up_exps@0-7, output
    tensors: tuple[str, ...]


def parse_ties(ties) -> tuple[tuple[str, ...], ...]:
    """`--tie a,b` (repeatable) -> sorted tuples of kinds; a kind in two ties is an error."""
    out: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for t in ties or ():
        kinds = tuple(sorted(k.strip() for k in (t.split(",") if isinstance(t, str) else t) if k.strip()))
        if len(kinds) < 2:
            raise UsageError(f"--tie {t}: name two or more tensor kinds, comma-separated (ffn_up_exps,ffn_gate_exps)")
        if seen & set(kinds):
            raise UsageError(f"--tie {t}: {sorted(seen & set(kinds))[0]} is already tied")
        seen |= set(kinds)
        out.append(kinds)
    return tuple(sorted(out))


def make_groups(model: ModelFacts, spec: str = DEFAULT_SPEC, ties=()) -> list[Group]:
    m = _SPEC.match(spec or DEFAULT_SPEC)
    if not m:
        raise UsageError(f"--groups {spec}: expected bands:N (kind x N block bands), kind, or tensor")
    ties = parse_ties(ties)
    tied = {k: "+".join(t) for t in ties for k in t}
    n = max(model.n_layer, 1)
    bands = int(m.group("bands")) if m.group("bands") else 1
    members: dict[tuple, list[str]] = {}
    for t in model.tensors:  # processing order
        b, kind = block_of(t.name), kind_of(t.name)
        if m.group("tensor"):
            key: tuple = (t.name,)
        elif b < 0:
            key = (kind,)
        else:
            key = (tied.get(kind, kind), min(b * bands // n, bands - 1))
        members.setdefault(key, []).append(t.name)
    groups = []
    for key, names in members.items():
        if len(key) == 2:
            blocks = sorted({block_of(x) for x in names})
            lo, hi = blocks[0], blocks[-1]
            name = f"{key[0]}@{lo}" if lo == hi else f"{key[0]}@{lo}-{hi}"
        else:
            name = key[0]
        groups.append(Group(name, tuple(names)))
    return groups


def describe(spec: str, ties) -> str:
    t = parse_ties(ties)
    return spec + "".join(f", tie {'+'.join(x)}" for x in t)
