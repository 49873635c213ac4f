"""Proof of the stock model: the real stock llama-quantize against job.make_plan(policy="stock").

Every zoo model x every ftype llama-quantize accepts x {with imatrix, without}, then the
command-line options on a smaller set. One test item per case, so pytest-xdist spreads them;
the ftypes whose grids take seconds to set up (IQ1, IQ2, IQ3_XXS) come first, so no worker
is left with a queue of slow cases at the end. Where the plan predicts an abort, the binary
must fail, and the other way round.
"""

from __future__ import annotations

import pytest
from helpers import differential, zoo
from helpers.differential import check
from helpers.stock_binary import PIN

from qpatch.families.pins import family_of
from qpatch.gguf.synth import Spec, write_model

FTYPES = family_of(PIN).catalogue.ftypes

pytestmark = pytest.mark.binary

_SLOW_FIRST = ("IQ1_S", "IQ1_M", "IQ2_M", "IQ3_XXS", "IQ2_S", "IQ2_XS", "IQ2_XXS")
_ORDER = sorted(FTYPES, key=lambda f: _SLOW_FIRST.index(f.name) if f.name in _SLOW_FIRST else len(_SLOW_FIRST))
MATRIX = [pytest.param(m.name, f.name, im, id=f"{m.name}-{f.name}-{'imatrix' if im else 'none'}")
          for f in _ORDER for im in (True, False) for m in zoo.ZOO]


@pytest.mark.parametrize("model,ftype,with_imatrix", MATRIX)
def test_ftype(model, ftype, with_imatrix, zoo_files, stock_quantize, tmp_path):
    path, imatrix = zoo_files[model]
    check(stock_quantize, path, ftype, tmp_path, imatrix=imatrix if with_imatrix else None)


# (id, model, ftype, imatrix: "full" | "none" | ("skip"|"wrong", tensor), options, plan outcome meant)
OPTIONS = [
    ("pure", "llama-gqa4-16L", "Q4_K_M", "none", ["--pure"], "ok"),
    ("pure-imatrix-moe", "llama-moe8-gqa2-13L", "Q3_K_M", "full", ["--pure"], "ok"),
    ("pure-has-no-fallback", "llama-rows288-12L", "Q4_K_M", "none", ["--pure"], "fails"),
    ("output-and-embd-types", "llama-gqa4-16L", "Q4_K_M", "none",
     ["--output-tensor-type", "q8_0", "--token-embedding-type", "Q4_K"], "ok"),
    ("output-type-tied", "llama-tied-7L", "Q3_K_M", "none", ["--output-tensor-type", "q5_k"], "ok"),
    ("embd-type-tied", "llama-tied-7L", "Q4_K_S", "none", ["--token-embedding-type", "q8_0"], "ok"),
    # stock falls back inside type choice, then sets the user's Q6_K again: rows of 288 abort
    ("output-type-needs-fallback", "llama-rows288-12L", "Q4_K_M", "none", ["--output-tensor-type", "q6_k"], "fails"),
    ("embd-type-with-f16-fallbacks", "llama-rows200-10L", "Q5_K_M", "none", ["--token-embedding-type", "f16"], "ok"),
    # patterns are lowercased; attn_v matches both, the last one wins
    ("tensor-types-last-wins", "llama-gqa4-16L", "Q4_K_M", "none",
     ["--tensor-type", "attn_v=q8_0", "--tensor-type", "ATTN_=q5_k", "--tensor-type", r"blk\.[0-3]\.ffn_up=iq4_nl"],
     "ok"),
    # ffn_down (rows 608) fell back, so its override is skipped; output (Q8_0 by rule, no fallback) is not
    ("tensor-types-skip-fallback", "llama-rows288-12L", "Q4_K_M", "none",
     ["--tensor-type", "ffn_down=q8_0", "--tensor-type", "output=q4_0"], "ok"),
    # the DeepSeek-V3 trap: attn_k_b (rows of 128) falls back from Q4_K, so attn_k_b=q8_0 is ignored
    ("tensor-types-dsv3-attn_k_b", "deepseek-v3-thin-61L", "Q4_K_M", "full",
     ["--tensor-type", "attn_k_b=q8_0", "--tensor-type", "ffn_down_exps=q5_k", "--tensor-type", "shexp=q8_0"], "ok"),
    ("tensor-types-moe8-low-bit", "llama-moe8-gqa2-13L", "IQ2_XXS", "full", ["--tensor-type", "exps=q2_k"], "ok"),
    ("leave-output", "llama-gqa4-16L", "Q4_K_M", "none", ["--leave-output-tensor"], "ok"),
    ("leave-output-qwen3", "qwen3moe-128e-24L", "IQ2_XS", "full", ["--leave-output-tensor"], "ok"),
] + differential.IMATRIX_REAL_RUNS


@pytest.mark.parametrize("model,ftype,imatrix,args,meant", [pytest.param(*c[1:], id=c[0]) for c in OPTIONS])
def test_options(model, ftype, imatrix, args, meant, zoo_files, stock_quantize, tmp_path):
    path, _ = zoo_files[model]
    im = zoo.imatrix_for(model, imatrix, zoo_files, tmp_path)
    plan = check(stock_quantize, path, ftype, tmp_path, imatrix=im, args=args)
    assert ("fails" if plan.errors else "ok") == meant, f"case no longer tests what it was written for: {plan.errors}"


@pytest.mark.parametrize("kv_heads,meant", [
    pytest.param([2, 2, 2, 0, 2, 2, 2], "fails", id="kv-heads-0-but-attn_v"),  # GGML_ASSERT n_attention_wv
    pytest.param([2, 2, 4, 4, 8, 8, 8], "ok", id="kv-heads-per-layer"),  # n_gqa is layer 0's
])
def test_per_layer_kv_heads(kv_heads, meant, stock_quantize, tmp_path):
    spec = Spec("llama-kvarr-7L", "llama", 7, n_head=8, n_head_kv=2,
                extra=(("llama.attention.head_count_kv", ("arr", kv_heads)),))
    model = write_model(spec, tmp_path / "m.gguf")
    plan = check(stock_quantize, model, "Q2_K", tmp_path)
    assert ("fails" if plan.errors else "ok") == meant, plan.errors
