"""deepseek-v3-ik: a DeepSeek-V3/R1 mix for ik_llama.cpp in the style of the published IQ-K recipes.

What: the shape of the `--custom-q` recipes people publish for DeepSeek-V3/R1 on ik_llama.cpp
(attention, shared experts and the dense blocks high with IQ-K types, routed experts low):

  every block        attn_q_a, attn_q_b, attn_kv_a_mqa, attn_kv_b, attn_v_b, attn_output  -> IQ5_KS
                     attn_k_b (rows of 128: no 256-block type fits)                      -> Q8_0
  dense blocks       ffn_down -> IQ5_KS, ffn_gate/ffn_up -> IQ4_KS
  shared experts     ffn_down_shexp -> IQ5_KS, ffn_gate_shexp/ffn_up_shexp -> IQ4_KS
  routed experts     ffn_gate_exps/ffn_up_exps -> the ftype's own type, ffn_down_exps one step up;
                     in the first and last eighth of the routed blocks each one step higher again
  token_embd -> IQ4_K, output -> IQ6_K

for the IQ-K and trellis ftypes (IQ1_KT ... IQ4_K below); every other ftype keeps stock's choices.
"One step" follows each ftype's own family of types (IQ2_KS -> IQ3_KS -> IQ4_KS, IQ2_K -> IQ3_K ->
IQ4_K, IQ2_KT -> IQ3_KT -> IQ4_KT), as the recipes do.

Why: ik_llama.cpp's stock choice for these ftypes spends the ftype's low type on attention and shared
experts (or Q5_K/Q8_0 by substring tests); the recipes instead keep everything that runs for every
token high and put the bits saved in the routed experts, which hold ~95 % of the weights.

Built from the same rule blocks as deepseek-v3 (its EDGE frame: the first and last eighth of a kind's
tensors), so the two policies read alike; only the types differ.

For: `deepseek2` models (DeepSeek-V2/V3/R1, Kimi-K2) on the ik_llama pin family. It names ik's types,
so on a mainline pin it is an error at load.
"""

from qpatch.policy.model import T

from qpatch.policy.model import ByFtype, Ftypes, Policy, rule
from qpatch_policies.deepseek_v3 import EDGE

# (ftype, its own type, one step up, two steps up)
STEPS = (
    ("IQ1_KT", T.IQ1_KT, T.IQ2_KT, T.IQ3_KT),
    ("IQ2_KT", T.IQ2_KT, T.IQ3_KT, T.IQ4_KT),
    ("IQ3_KT", T.IQ3_KT, T.IQ4_KT, T.IQ4_KT),
    ("IQ4_KT", T.IQ4_KT, T.IQ4_KT, T.IQ5_KS),
    ("IQ2_KS", T.IQ2_KS, T.IQ3_KS, T.IQ4_KS),
    ("IQ2_K", T.IQ2_K, T.IQ3_K, T.IQ4_K),
    ("IQ2_KL", T.IQ2_KL, T.IQ3_K, T.IQ4_K),
    ("IQ3_KS", T.IQ3_KS, T.IQ4_KS, T.IQ5_KS),
    ("IQ3_K", T.IQ3_K, T.IQ4_K, T.IQ5_K),
    ("IQ4_KSS", T.IQ4_KSS, T.IQ4_KS, T.IQ5_KS),
    ("IQ4_KS", T.IQ4_KS, T.IQ5_KS, T.IQ5_KS),
    ("IQ4_K", T.IQ4_K, T.IQ5_K, T.IQ6_K),
)
IQK = Ftypes(tuple(f for f, *_ in STEPS), "IQ-K")
OWN = ByFtype(tuple((f, a) for f, a, _, _ in STEPS))
UP1 = ByFtype(tuple((f, b) for f, _, b, _ in STEPS))
UP2 = ByFtype(tuple((f, c) for f, _, _, c in STEPS))

ATTENTION = ("attn_q_a", "attn_q_b", "attn_kv_a_mqa", "attn_kv_b", "attn_v_b", "attn_output")
GATE_UP_EXPS = ("ffn_gate_exps", "ffn_up_exps")

RULES = (
    rule("token_embd", T.IQ4_K, IQK),
    rule("output", T.IQ6_K, IQK),
    rule("attn_k_b", T.Q8_0, IQK, note="rows of 128: ik would fall back from any 256-block type anyway"),
    rule(ATTENTION, T.IQ5_KS, IQK),
    rule("ffn_down", T.IQ5_KS, IQK, note="the dense blocks"),
    rule(("ffn_gate", "ffn_up"), T.IQ4_KS, IQK),
    rule("ffn_down_shexp", T.IQ5_KS, IQK),
    rule(("ffn_gate_shexp", "ffn_up_shexp"), T.IQ4_KS, IQK),
    rule("ffn_down_exps", UP2, IQK, EDGE, note="first and last eighth of the routed blocks"),
    rule("ffn_down_exps", UP1, IQK),
    rule(GATE_UP_EXPS, UP1, IQK, EDGE),
    rule(GATE_UP_EXPS, OWN, IQK),
)

POLICY = Policy(
    name="deepseek-v3-ik",
    summary="DeepSeek-V3/R1 on ik_llama.cpp: attention, shared experts and dense blocks high (IQ5_KS/IQ4_KS), "
            "routed experts low",
    rules=RULES,
    archs=("deepseek2",),
)
