"""deepseek-v3: the Collaborative Compression (CC-MoE) mixed-precision mix, as rules.

What: reproduces the type choices of the replaced `src/llama-quant.cpp` that the CC-MoE work
(arXiv 2509.25689) used to quantize DeepSeek-V3 on llama.cpp b6700, stated as a table in
shared/reference/cc-moe-mix.md. Low-bit ftypes (IQ1_S … IQ2_M) get protected attention and
shared experts, and expert tensors alternate between one step up at the edges (first and
last eighth of the expert layers) and one step down in the middle. Other ftypes bump shared
experts and every use_more_bits ffn_down_exps, and give DeepSeek's MLA tensors
(attn_kv_a_mqa, attn_k_b, attn_v_b, attn_q_a, attn_q_b) types stock has no rule for.
Shape fallbacks go to Q8_0 (DeepSeek's attn_k_b rows are 128 long), a very-low-bit tensor
without an imatrix entry is quantized to Q8_0 instead of aborting, and an imatrix entry of
the wrong length (expert-pruned models) is ignored.

Why: stock llama.cpp's rules test n_expert == 8 and count ffn_down tensors, not layers, so
on DeepSeek's 256 experts its IQ1/IQ2 mixes lose every MoE-specific bump; CC-MoE shipped a
65 KB replacement file instead of rules. This policy is the same mix, reviewable.

For: `deepseek2` models (DeepSeek-V2/V2.5/V3/R1, Kimi-K2 uses the same architecture). Other
architectures keep stock's choices (the policy does not target them).

Composed from n-expert-fix (attn_k and attn_output for n_expert >= 8). Following the
table, attn_v keeps stock's `n_expert == 8` (DeepSeek models have no attn_v tensor anyway).

Pins: the mix was defined on 4227c9be (b6700). On 0c1e57098 (the default pin) it gives the same
type to every tensor of a DeepSeek model whenever an imatrix is given (the CC-MoE golden data,
76 cases, is reproduced on both pins). Two rules exist only for that: `attn_kv_b` keeps the
ftype's default where the table says "unchanged", because 0c1e57098's stock treats attn_kv_b as
attn_v (Q4_K and the like) where 4227c9be gave it the default. What cannot be the same without
an imatrix: 0c1e57098 requires one for IQ3_XXS tensors too (4227c9be did not), so this policy's
"no imatrix -> Q8_0" also covers them there; and 0c1e57098 no longer refuses the low-bit ftypes
up front, so jobs 4227c9be refused (IQ1_M without an imatrix) run, with Q8_0 for those tensors.
The table at the end of docs/policies/deepseek-v3.md lists every such difference.
"""

from qpatch.policy.model import T

from qpatch.policy.blocks import MANY_EXPERTS, HIGHER_BIT, LOW_BIT, iq3_s_on_iq2_s_m
from qpatch.policy.model import (
    After, AnyOf, Before, ByFtype, Default, Ftypes, Imatrix, Ordinal, Policy, UseMoreBits, rule,
)
from qpatch_policies import n_expert_fix

# Frames (see qpatch.policy.model): k and N for each kind of position.
OWN = Ordinal()  # k, N over tensors of the tensor's own kind
ATTN_WV = Ordinal(("attn_v", "attn_qkv", "attn_kv_b"))  # stock's shared i_attention_wv counter
DENSE_DOWN = Ordinal(("ffn_down",), n="blocks")  # dense kinds: N is the block count, as in stock
DENSE_GATE = Ordinal(("ffn_gate",), n="blocks")
DENSE_UP = Ordinal(("ffn_up",), n="blocks")

EDGE = AnyOf((Before(1, 8, OWN), After(7, 8, OWN)))  # k < N/8 or k > 7N/8 (strictly greater)

# Low-bit expert steps: up(ftype) at the edges, down(ftype) in the middle.
UP = ByFtype((("IQ2_M", T.IQ3_XXS), ("IQ2_S", T.IQ2_S), ("IQ2_XS", T.IQ2_S), ("IQ2_XXS", T.IQ2_XS),
              ("IQ1_M", T.IQ2_XXS), ("IQ1_S", T.IQ1_M)))
DOWN = ByFtype((("IQ2_M", T.IQ2_XS), ("IQ2_S", T.IQ2_XXS), ("IQ2_XS", T.IQ2_XXS), ("IQ2_XXS", T.IQ1_M),
                ("IQ1_M", T.IQ1_S), ("IQ1_S", T.IQ1_S)))

LOW_BIT = (
    n_expert_fix.LOW_BIT_ATTN_K,
    rule("attn_kv_a_mqa", T.Q4_K, LOW_BIT, MANY_EXPERTS),
    rule("attn_kv_b", T.Q4_K, LOW_BIT, MANY_EXPERTS, Before(1, 8, ATTN_WV)),
    rule("attn_kv_b", iq3_s_on_iq2_s_m(T.Q2_K), LOW_BIT, MANY_EXPERTS, UseMoreBits(ATTN_WV)),
    rule("attn_kv_b", Default(), LOW_BIT, MANY_EXPERTS, note="the table's 'unchanged' is b6700's default; newer pins treat attn_kv_b as attn_v"),
    rule("attn_q_a", T.Q4_K, LOW_BIT, MANY_EXPERTS),
    rule("attn_q_b", iq3_s_on_iq2_s_m(T.Q2_K), LOW_BIT, MANY_EXPERTS),
    rule("ffn_down", T.Q6_K, LOW_BIT, MANY_EXPERTS, Before(1, 16, DENSE_DOWN)),
    rule("ffn_down", iq3_s_on_iq2_s_m(T.Q2_K), LOW_BIT, MANY_EXPERTS, Before(1, 8, DENSE_DOWN)),
    rule("ffn_down", Default(), LOW_BIT, MANY_EXPERTS, note="stock's shared ffn_down counter must not decide here"),
    rule("ffn_gate", T.Q4_K, LOW_BIT, MANY_EXPERTS, Before(1, 16, DENSE_GATE)),
    rule("ffn_gate", iq3_s_on_iq2_s_m(T.Q2_K), LOW_BIT, MANY_EXPERTS, Before(1, 8, DENSE_GATE)),
    rule("ffn_up", T.Q4_K, LOW_BIT, MANY_EXPERTS, Before(1, 16, DENSE_UP)),
    rule("ffn_up", iq3_s_on_iq2_s_m(T.Q2_K), LOW_BIT, MANY_EXPERTS, Before(1, 8, DENSE_UP)),
    rule("ffn_down_exps", T.IQ2_XXS, LOW_BIT, MANY_EXPERTS, EDGE),
    rule("ffn_down_exps", T.IQ1_M, LOW_BIT, MANY_EXPERTS),
    rule(("ffn_gate_exps", "ffn_up_exps"), UP, LOW_BIT, MANY_EXPERTS, EDGE),
    rule(("ffn_gate_exps", "ffn_up_exps"), DOWN, LOW_BIT, MANY_EXPERTS),
    rule("ffn_down_shexp", T.Q5_K, LOW_BIT, MANY_EXPERTS, UseMoreBits(OWN)),
    rule("ffn_down_shexp", T.IQ4_XS, LOW_BIT, MANY_EXPERTS),
    rule(("ffn_gate_shexp", "ffn_up_shexp"), T.IQ4_XS, LOW_BIT, MANY_EXPERTS, UseMoreBits(OWN)),
    rule(("ffn_gate_shexp", "ffn_up_shexp"), T.IQ3_S, LOW_BIT, MANY_EXPERTS),
    rule("attn_output", T.IQ4_XS, LOW_BIT, UseMoreBits(OWN), note="any expert count"),
    rule("attn_output", T.IQ3_S, LOW_BIT),
)

SHEXP = ("ffn_down_shexp", "ffn_gate_shexp", "ffn_up_shexp")
HB_UP = ByFtype((("Q2_K", T.Q3_K), ("Q3_K_M", T.Q4_K), ("Q3_K_L", T.Q5_K), ("Q4_K_S", T.Q5_K), ("Q4_K_M", T.Q6_K),
                 ("Q5_K_M", T.Q6_K), ("IQ3_S", T.Q4_K), ("IQ3_M", T.Q4_K), ("IQ3_XS", T.IQ3_S),
                 ("IQ3_XXS", T.IQ3_S)))
HB_UP_FTYPES = Ftypes(tuple(f for f, _ in HB_UP.table))
NO_IMATRIX_IQ4 = ByFtype((("IQ4_NL", T.Q5_K), ("IQ4_XS", T.Q5_K)))

HIGHER_BIT = (
    n_expert_fix.ATTN_K,
    rule(SHEXP, T.Q8_0, HIGHER_BIT, MANY_EXPERTS, UseMoreBits(OWN)),
    rule(SHEXP, ByFtype((("Q4_K_S", T.Q5_K), ("Q3_K_L", T.Q5_K), ("Q4_K_M", T.Q6_K), ("Q5_K_S", T.Q6_K),
                         ("Q5_K_M", T.Q8_0)), T.Q5_K), HIGHER_BIT, MANY_EXPERTS),
    rule("ffn_down_exps", T.Q4_1, Ftypes(("Q4_0",)), Imatrix(True), MANY_EXPERTS, UseMoreBits(OWN)),
    rule("ffn_down_exps", T.Q5_1, Ftypes(("Q5_0",)), Imatrix(True), MANY_EXPERTS, UseMoreBits(OWN)),
    rule("ffn_down_exps", HB_UP, HB_UP_FTYPES, MANY_EXPERTS, UseMoreBits(OWN)),
    rule("ffn_down_exps", NO_IMATRIX_IQ4, Ftypes(("IQ4_NL", "IQ4_XS")), Imatrix(False), MANY_EXPERTS, UseMoreBits(OWN)),
    rule("ffn_down_exps", Default(), HIGHER_BIT, MANY_EXPERTS, note="CC-MoE's rule comes before stock's ffn_down rule"),
    *n_expert_fix.ATTN_OUTPUT,
    rule("attn_kv_a_mqa", T.Q8_0, HIGHER_BIT, MANY_EXPERTS),
    rule("attn_kv_b", Default(), HIGHER_BIT, MANY_EXPERTS, note="as on b6700: stock's attn_v rules reach attn_kv_b only on newer pins"),
    rule(("attn_k_b", "attn_v_b"), ByFtype((("Q4_K_M", T.Q6_K), ("Q5_K_S", T.Q6_K), ("Q5_K_M", T.Q8_0)), T.Q5_K),
         HIGHER_BIT, MANY_EXPERTS),
    rule("attn_q_b", ByFtype((("Q4_K_M", T.Q5_K), ("Q5_K_S", T.Q5_K), ("Q5_K_M", T.Q6_K)), T.Q4_K), HIGHER_BIT, MANY_EXPERTS),
    rule("attn_q_a", ByFtype((("Q4_K_M", T.Q6_K), ("Q5_K_S", T.Q6_K), ("Q5_K_M", T.Q8_0)), T.Q5_K), HIGHER_BIT, MANY_EXPERTS),
)

# CC-MoE sends every block-256 type (and Q4_K..Q6_K) to Q8_0 when a row does not fit.
FALLBACK = tuple((t, T.Q8_0) for t in (T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M, T.Q2_K,
                                       T.Q3_K, T.IQ4_XS, T.Q4_K, T.Q5_K, T.Q6_K)) + ((T.TQ1_0, T.Q4_0), (T.TQ2_0, T.Q4_0))

POLICY = Policy(
    name="deepseek-v3",
    summary="the CC-MoE mixed-precision mix for DeepSeek-V3/R1 (deepseek2), as rules",
    rules=LOW_BIT + HIGHER_BIT,
    archs=("deepseek2",),
    fallback=FALLBACK,
    missing_imatrix="q8_0",
    imatrix_mismatch="ignore",
)
