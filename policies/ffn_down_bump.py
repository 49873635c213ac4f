"""ffn-down-bump: stock's "more bits for the first eighth of the layers" counted in blocks.

What: in the low-bit ftypes (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M) stock bumps a tensor
whose name contains `ffn_down` to Q2_K (IQ3_S for IQ2_S/IQ2_M) when a running counter
`i_ffn_down < n_layer/8`. That counter advances once per ffn_down *tensor*, so in a model
with several ffn_down kinds (dense `ffn_down`, `ffn_down_exps`, `ffn_down_shexp`) it runs
ahead of the block index and the bump covers too few blocks. In this policy the bump reads
the tensor's block index `i` (from `blk.<i>.`) against the block count `n`:

    every ffn_down kind, low-bit ftype:  i <  n/8  -> iq3_s_on_iq2_s_m(Q2_K)   (IQ3_S for IQ2_S/IQ2_M)
                                         i >= n/8  -> the ftype's default type

(C integer division.) For DeepSeek-V3 (61 blocks, 3 dense, then ffn_down_exps and
ffn_down_shexp per block) n/8 = 7: stock bumps blocks 0-2 (ffn_down) and 3-4 (exps and shexp),
7 tensors over 5 blocks; this policy bumps blocks 0-6, every ffn_down kind: 11 tensors.

The other ftypes need nothing: their ffn_down rules already read the block index for MoE
models (stock's `layer_info` parses the name when n_expert > 1), and in dense models the
counter equals the block index (one ffn_down per block).

Pins: 0c1e57098 still has the bug in another form (its `n_ffn_down` is the block count, but
`i_ffn_down` still counts tensors), so the policy means the same there; the differences between
the pins are stock's own (docs/policies/ffn-down-bump.md).

ik_llama.cpp keeps the same counter (`qs.i_ffn_down < qs.n_ffn_down/8`) in the branch it shares between
these ftypes and its own IQ2_KS, IQ2_XXS_R4, IQ2_XS_R4 and IQ2_M_R4 (IQ3_S for IQ2_M_R4 too), so the
policy covers those four there as well; mainline pins have no such ftypes.

For: MoE models with dense leading blocks or shared experts: DeepSeek-V2/V3/R1, Kimi-K2,
GLM-4.5, and any model where ffn_down kinds share stock's counter.
"""

from qpatch.policy.blocks import LOW_BIT_NAMES
from qpatch.policy.model import AtLeast, Before, Block, ByFtype, Default, Ftypes, Policy, Select, rule
from qpatch.policy.model import T

FFN_DOWN = Select(contains="ffn_down")
LOW = Ftypes(LOW_BIT_NAMES + ("IQ2_KS", "IQ2_XXS_R4", "IQ2_XS_R4", "IQ2_M_R4"), "low-bit")  # the last four: ik only
TWO_Q2_K = ByFtype((("IQ2_S", T.IQ3_S), ("IQ2_M", T.IQ3_S), ("IQ2_M_R4", T.IQ3_S)), T.Q2_K)

BUMP = rule(FFN_DOWN, TWO_Q2_K, LOW, Before(1, 8, Block()), note="first eighth of the blocks")
NO_BUMP = rule(FFN_DOWN, Default(), LOW, AtLeast(1, 8, Block()), note="stock's counter may not decide here")

RULES = (BUMP, NO_BUMP)

POLICY = Policy(
    name="ffn-down-bump",
    summary="low-bit ffn_down bump for the first 1/8 of the blocks, by block index (not a tensor counter)",
    rules=RULES,
)
