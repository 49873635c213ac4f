"""The predict engine: one job's plan, built once. It checks the policy against the pin, lets the pin's
family walk the tensors in its binary's order (families/<name>/predict.py), and freezes what the walk
found, with the warnings a user should read, into a `Plan`. The family is passed in, never looked up.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from qpatch.gguf.catalogue import Catalogue, T
from qpatch.gguf.imatrix import entry_length
from qpatch.gguf.model_facts import ModelFacts
from qpatch.policy.model import ByFtype, Policy, Set, Step
from qpatch.predict.options import Options
from qpatch.predict.plan import Outcome, Plan

if TYPE_CHECKING:
    from qpatch.families.base import Family


def plan(model: ModelFacts, policy: Policy, opts: Options, fam: "Family", pin: str) -> Plan:
    """Predict every tensor's type on `pin`, of family `fam`. Conditions under which llama-quantize aborts
    go to `errors`."""
    effective = for_family(policy, fam.name)
    check_types(policy, fam.catalogue, pin)
    walk = fam.walk(model, effective, opts)
    for t in walk.order:  # the binary's processing order
        walk.decide(t)
    out = walk.out
    warnings = out.warnings + plan_warnings(model, effective, opts, out)  # the family's own first
    if effective is not policy:
        warnings.insert(0, f"policy {policy.name} is written for pin families {', '.join(policy.families)}; on pin "
                           f"{pin} (family {fam.name}) it keeps stock's choices")
    return Plan(model=model, policy=policy, pin=pin, family=fam, options=opts, tensors=tuple(out.tensors),
                errors=tuple(out.errors), real_run_only=tuple(out.real_run_only), warnings=tuple(warnings))


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


def plan_warnings(model: ModelFacts, policy: Policy, opts: Options, p: Outcome) -> list[str]:
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
        share = sum(t.nbytes for t in to_q8) / max(1, sum(t.nbytes for t in p.tensors))
        out.append(f"{len(to_q8)} tensor(s), {100 * share:.0f} % of the file, are Q8_0 instead of "
                   f"{opts.ftype.name}'s types: they need an imatrix"
                   f"{' entry' if opts.imatrix is not None else ''} and policy {policy.name} answers a missing one "
                   "with Q8_0 (pass --imatrix)")
    if opts.imatrix is not None:
        chosen = [t for t in p.tensors if t.chosen]
        missing = [t.name for t in chosen if t.name not in opts.imatrix]
        wrong = [t.name for t in chosen if t.name in opts.imatrix
                 and opts.imatrix[t.name] != entry_length(t.shape)]
        if missing or wrong:
            out.append(f"the imatrix has no entry for {len(missing)} and an entry of another length for {len(wrong)} "
                       f"of the {len(chosen)} tensors quantized (e.g. {(missing or wrong)[0]}): is it this model's?")
    return out


