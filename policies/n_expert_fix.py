"""n-expert-fix: stock's MoE bumps for every model with 8 or more experts, not exactly 8.

What: every place where llama.cpp 4227c9be's `llama_tensor_get_type` tests
`hparams.n_expert == 8` behaves as `n_expert >= 8`. There are six such places:

  low-bit ftypes (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M)
    attn_k                 -> Q4_K
    attn_output            -> Q5_K
  other quantized ftypes (not MXFP4_MOE)
    attn_v                 -> Q8_0 (overrides every other attn_v rule, as stock does); on the
                              current family (0c1e57098) stock's attn_v rules also decide attn_qkv
                              and attn_kv_b, so the fix covers them there (Select(stock="attn_v"))
    attn_k                 -> Q8_0
    attn_output (not falcon), for Q2_K IQ3_XS IQ3_XXS Q3_K_S Q3_K_M IQ4_NL Q4_K_S Q4_K_M IQ3_S IQ3_M IQ4_XS
                           -> Q5_K, and for every other ftype the ftype's default type: stock's
                              `if (n_expert == 8) {...} else {table}` never reaches the else-table
                              (Q2_K->Q3_K, Q3_K_L->Q5_K, ...) for such a model
    ffn_down*, IQ3_M, use_more_bits(block i, block count) -> Q4_K
      (stock: i < n/8 || (n_expert == 8 && use_more_bits); the i < n/8 half already holds)

Why: those bumps were written for Mixtral-8x7B. DeepSeek-V3/R1 (256 experts), Qwen3-MoE
(128), Kimi-K2 (384) silently lose them: their attention and attn_output go out at the
ftype's lowest type while Mixtral's are protected.

Pins: on 0c1e57098 stock's attn_v site also decides attn_qkv and attn_kv_b, so the fix reaches
them (DeepSeek-V2's attn_kv_b: Q8_0 there, the default on 4227c9be); the other differences
between the pins are stock's own (its new fallback table: Q2_K/Q3_K rows that do not fit go to
Q4_0, not IQ4_NL), listed at the end of docs/policies/n-expert-fix.md.

For: any MoE model with more than 8 experts. With exactly 8 experts, or fewer, it changes
nothing (the conditions are stock's own for n_expert == 8).

ik_llama.cpp: its src/llama-quantize.cpp has no `n_expert == 8` test left (every one reads
`n_expert >= 4` or `>= 8`), so there is nothing for this policy to fix: on the ik_llama family it has
no rules and keeps stock's choices (`families` below). What ik still routes by substring instead of by
kind ("attn_k" also catches attn_k_b and attn_kv_*, "attn_q" catches attn_q_a/attn_q_b and attn_qkv)
is documented in docs/policies/n-expert-fix.md; it is not an expert-count bug.
"""

from qpatch.policy.model import T

from qpatch.policy.blocks import MANY_EXPERTS, HIGHER_BIT, LOW_BIT
from qpatch.policy.model import Arch, Default, Ftypes, Not, Policy, Select, UseMoreBits, rule

ATTN_OUTPUT_Q5K = Ftypes(("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S",
                          "IQ3_M", "IQ4_XS"))

LOW_BIT_ATTN_K = rule("attn_k", T.Q4_K, LOW_BIT, MANY_EXPERTS)
LOW_BIT_ATTN_OUTPUT = rule("attn_output", T.Q5_K, LOW_BIT, MANY_EXPERTS)
ATTN_V = rule(Select(stock="attn_v"), T.Q8_0, HIGHER_BIT, MANY_EXPERTS, note="every tensor stock's attn_v rules decide on the pin")
ATTN_K = rule("attn_k", T.Q8_0, HIGHER_BIT, MANY_EXPERTS)
NOT_FALCON = Not(Arch(("falcon",)))
ATTN_OUTPUT = (
    rule("attn_output", T.Q5_K, ATTN_OUTPUT_Q5K, MANY_EXPERTS, NOT_FALCON),
    rule("attn_output", Default(), HIGHER_BIT, MANY_EXPERTS, NOT_FALCON, note="the n_expert == 8 branch has no else"),
)
IQ3_M_FFN_DOWN = rule(Select(contains="ffn_down"), T.Q4_K, Ftypes(("IQ3_M",)), MANY_EXPERTS, UseMoreBits())

RULES = (LOW_BIT_ATTN_K, LOW_BIT_ATTN_OUTPUT, ATTN_V, ATTN_K, *ATTN_OUTPUT, IQ3_M_FFN_DOWN)

POLICY = Policy(
    name="n-expert-fix",
    summary="stock's n_expert == 8 bumps (attn_v/attn_k Q8_0, attn_output Q5_K, ...) for every n_expert >= 8",
    rules=RULES,
    families=("b6700", "current"),
)
