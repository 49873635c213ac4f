"""Vocabulary shared by policy modules: ftype groups and stock idioms, as conditions and actions."""

from __future__ import annotations

import re

from qpatch.gguf.catalogue import T, all_ftypes
from qpatch.policy.model import ByFtype, Experts, Ftypes, Select

# The six very-low-bit ftypes that stock handles in one branch.
LOW_BIT_NAMES = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M")
# Every other ftype for which type choice runs, except MXFP4_MOE, in any pin family (a pin's render
# lists the ones it has).
HIGHER_BIT_NAMES = tuple(f.name for f in all_ftypes()
                         if f.quantizes and f.name not in LOW_BIT_NAMES and f.name != "MXFP4_MOE")

LOW_BIT = Ftypes(LOW_BIT_NAMES, "low-bit")
HIGHER_BIT = Ftypes(HIGHER_BIT_NAMES, "higher-bit")
MANY_EXPERTS = Experts(">=", 8)


def iq3_s_on_iq2_s_m(otherwise: T) -> ByFtype:
    """Stock's idiom: IQ3_S for IQ2_S and IQ2_M, else `otherwise`."""
    return ByFtype((("IQ2_S", T.IQ3_S), ("IQ2_M", T.IQ3_S)), otherwise)


def in_blocks(kind: str, blocks: str) -> Select:
    """Tensors of one kind in the listed blocks, e.g. in_blocks("ffn_down_exps", "3-5,9"): a regex whose
    alternation reads as the list (blocks 3, 4, 5 and 9), never a character class like [3-59]."""
    nums = []
    for part in blocks.replace(" ", "").split(","):
        a, _, b = part.partition("-")
        if not a.isdigit() or (b and not b.isdigit()) or (b and int(b) < int(a)):
            from qpatch.errors import PolicyError

            raise PolicyError(f"in_blocks({kind!r}, {blocks!r}): write block numbers and ranges, e.g. '0-2,5'")
        nums += list(range(int(a), int(b or a) + 1))
    return Select(pattern=rf"^blk\.({'|'.join(str(n) for n in nums)})\.{re.escape(kind)}\.")
