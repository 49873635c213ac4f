"""Hypothesis strategies for random small policies over the zoo's tensor kinds.

Every condition and action class of qpatch.policy.model appears, so a renderer or evaluator
case that disagrees with the other shows up as a counterexample (shrunk to a small rule set).
"""

from __future__ import annotations

from hypothesis import strategies as st

from qpatch.gguf.catalogue import T
from qpatch.policy.model import (
    LADDER,
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
    Rule,
    Select,
    Set,
    Stacked,
    Step,
    UseMoreBits,
)

KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "attn_kv_a_mqa", "attn_kv_b", "attn_k_b", "attn_v_b",
         "attn_q_a", "attn_q_b", "ffn_down", "ffn_gate", "ffn_up", "ffn_down_exps", "ffn_gate_exps",
         "ffn_up_exps", "ffn_down_shexp", "ffn_gate_shexp", "ffn_up_shexp", "output", "token_embd")
FTYPE_NAMES = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_S", "Q4_0", "Q8_0", "IQ2_XXS", "IQ2_M", "IQ3_XXS", "IQ4_XS",
               "IQ1_M")
# Targets that quantize fast (IQ1 grids cost ~10 s per process); `make fuzz` may widen this.
TYPES = (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_0, T.Q4_0, T.Q5_1, T.IQ4_NL, T.IQ4_XS, T.IQ3_S, T.IQ2_XS,
         T.F16)

types = st.sampled_from(TYPES)
fracs = st.sampled_from([(1, 8), (1, 16), (7, 8), (1, 2), (3, 4), (1, 3)])
frames = st.one_of(
    st.just(Block()),
    st.builds(Ordinal, st.just(None), st.sampled_from(["count", "blocks"])),
    st.builds(Ordinal, st.sets(st.sampled_from(KINDS), min_size=1, max_size=3).map(lambda s: tuple(sorted(s))),
              st.sampled_from(["count", "blocks"])),
)
ops = st.sampled_from(["==", "!=", ">=", ">", "<=", "<"])


def _position(cls):
    return st.builds(lambda f, fr: cls(f[0], f[1], fr), fracs, frames)


leaf = st.one_of(
    _position(Before), _position(AtLeast), _position(After), st.builds(UseMoreBits, frames),
    st.builds(Experts, ops, st.sampled_from([0, 4, 8, 32, 64, 128])),
    st.builds(Gqa, ops, st.sampled_from([1, 2, 4, 8])),
    st.builds(Imatrix, st.booleans()),
    st.builds(Ftypes, st.sets(st.sampled_from(FTYPE_NAMES), min_size=1, max_size=4).map(lambda s: tuple(sorted(s)))),
    st.builds(Arch, st.sampled_from([("llama",), ("deepseek2",), ("qwen3moe", "falcon")])),
    st.builds(RowMultiple, st.sampled_from([32, 256, 512])),
    st.just(Stacked()),
)
conds = st.recursive(leaf, lambda inner: st.one_of(
    st.builds(Not, inner),
    st.builds(AnyOf, st.lists(inner, min_size=2, max_size=3).map(tuple)),
    st.builds(AllOf, st.lists(inner, min_size=2, max_size=3).map(tuple)),
), max_leaves=4)

actions = st.one_of(
    st.builds(Set, types),
    st.builds(ByFtype, st.lists(st.tuples(st.sampled_from(FTYPE_NAMES), types), min_size=1, max_size=3,
                                unique_by=lambda x: x[0]).map(tuple), st.one_of(st.none(), types)),
    st.builds(Step, st.sampled_from([-2, -1, 1, 2]), st.just(LADDER)),
    st.just(Default()),
    st.just(Keep()),
)
selects = st.one_of(
    st.sets(st.sampled_from(KINDS), min_size=1, max_size=3).map(lambda s: Select(kinds=tuple(sorted(s)))),
    st.sampled_from(["ffn_down", "attn_", "exps", "shexp", "_b."]).map(lambda s: Select(contains=s)),
)


@st.composite
def policies(draw, max_rules: int = 4) -> Policy:
    n = draw(st.integers(1, max_rules))
    rules = tuple(
        Rule(select=draw(selects), when=tuple(draw(st.lists(conds, max_size=2))), then=draw(actions),
             source=f"fuzz:{i + 1}")
        for i in range(n)
    )
    fallback = draw(st.one_of(st.none(), st.just(((T.Q4_K, T.Q8_0), (T.Q5_K, T.Q8_0), (T.Q6_K, T.Q8_0),
                                                     (T.IQ2_XS, T.Q8_0), (T.Q2_K, T.Q4_0)))))
    return Policy(name="fuzz", summary="random rules", rules=rules, fallback=fallback,
                  archs=draw(st.sampled_from([(), ("deepseek2",), ("llama", "qwen3moe")])),
                  missing_imatrix=draw(st.sampled_from(["abort", "q8_0"])), source="fuzz", content_hash="fuzz")
