"""Proof of the current family's stock model (0c1e57098) against its real llama-quantize.

`--dry-run` is the fast oracle: every zoo model x every ftype the pin accepts x imatrix on/off, and
every command-line option that changes a type, one test item per model so xdist spreads them.
The paths a dry run does not reach (the imatrix checks that abort a real run, the quantize loop's
imatrix lookup, and the output's row check) are proven with real runs, which also show that dry
run and real run agree on the types.
"""

from __future__ import annotations

import pytest
from helpers import differential, dry_run, zoo
from helpers.stock_binary import CURRENT_PIN as PIN

from qpatch.families.pins import family_of
from qpatch.gguf.synth import Spec, write_model

pytestmark = pytest.mark.binary

FTYPES = [f.name for f in family_of(PIN).catalogue.ftypes]


@pytest.mark.parametrize("model", [m.name for m in zoo.ZOO])
def test_every_ftype_dry_run(model, zoo_files, current_quantize):
    path, imatrix = zoo_files[model]
    failures, n = [], 0
    for ft in FTYPES:
        for im in (imatrix, None):
            n += 1
            try:
                dry_run.check(current_quantize, path, ft, pin=PIN, imatrix=im)
            except AssertionError as e:
                failures.append(str(e))
    assert not failures, f"{len(failures)} of {n} cases differ:\n" + "\n".join(failures[:5])


# (id, model, ftype, imatrix?, llama-quantize options, plan keyword arguments, outcome meant)
OPTIONS = [
    ("pure", "llama-gqa4-16L", "Q4_K_M", False, ["--pure"], {"pure": True}, "ok"),
    ("pure-falls-back", "llama-rows288-12L", "Q4_K_M", False, ["--pure"], {"pure": True}, "ok"),
    ("output-and-embd-types", "llama-gqa4-16L", "Q4_K_M", False,
     ["--output-tensor-type", "q8_0", "--token-embedding-type", "Q4_K"],
     {"output_tensor_type": "q8_0", "token_embedding_type": "Q4_K"}, "ok"),
    ("output-type-tied", "llama-tied-7L", "Q3_K_M", False, ["--output-tensor-type", "q5_k"],
     {"output_tensor_type": "q5_k"}, "ok"),
    ("embd-type-tied", "llama-tied-7L", "Q4_K_S", False, ["--token-embedding-type", "q8_0"],
     {"token_embedding_type": "q8_0"}, "ok"),
    # first match wins and replaces the mix: attn_v=q8_0 beats ATTN_=q5_k; the mix's counters skip them
    ("tensor-types-first-wins", "llama-gqa4-16L", "Q3_K_M", False,
     ["--tensor-type", "attn_v=q8_0", "--tensor-type", "ATTN_=q5_k", "--tensor-type", r"blk\.[0-3]\.ffn_up=iq4_nl"],
     {"tensor_types": ["attn_v=q8_0", "ATTN_=q5_k", r"blk\.[0-3]\.ffn_up=iq4_nl"]}, "ok"),
    # an override still goes through the fallback: q6_k on rows of 608 becomes q8_0
    ("tensor-types-then-fallback", "llama-rows288-12L", "Q4_K_M", False,
     ["--tensor-type", "ffn_down=q6_k", "--tensor-type", "output=q4_0"],
     {"tensor_types": ["ffn_down=q6_k", "output=q4_0"]}, "ok"),
    ("tensor-types-dsv3-attn_k_b", "deepseek-v3-thin-61L", "Q4_K_M", True,
     ["--tensor-type", "attn_k_b=q8_0", "--tensor-type", "ffn_down_exps=q5_k", "--tensor-type", "shexp=q8_0"],
     {"tensor_types": ["attn_k_b=q8_0", "ffn_down_exps=q5_k", "shexp=q8_0"]}, "ok"),
    ("tensor-types-counter-skips", "llama-moe8-gqa2-13L", "IQ2_XXS", True, ["--tensor-type", r"blk\.[0-2]\.=q4_k"],
     {"tensor_types": [r"blk\.[0-2]\.=q4_k"]}, "ok"),
    ("leave-output", "llama-gqa4-16L", "Q4_K_M", False, ["--leave-output-tensor"], {"leave_output_tensor": True}, "ok"),
    ("prune-layers", "llama-gqa4-16L", "Q4_K_M", False, ["--prune-layers", "3,5,5,9"], {"prune_layers": "3,5,5,9"},
     "ok"),
    ("prune-layers-moe", "deepseek2-mla-10L", "Q3_K_M", True, ["--prune-layers", "0,4"], {"prune_layers": "0,4"}, "ok"),
    # Q1_0 (block 128) on rows of 200: no fallback is defined, the binary throws
    ("q1_0-no-fallback", "llama-rows200-10L", "Q1_0", False, [], {}, "fails"),
    ("q1_0-override-no-fallback", "llama-rows288-12L", "Q8_0", False, ["--tensor-type", "ffn_down=q1_0"],
     {"tensor_types": ["ffn_down=q1_0"]}, "fails"),
]


@pytest.mark.parametrize("model,ftype,with_imatrix,args,kwargs,meant", [pytest.param(*c[1:], id=c[0]) for c in OPTIONS])
def test_options_dry_run(model, ftype, with_imatrix, args, kwargs, meant, zoo_files, current_quantize):
    path, imatrix = zoo_files[model]
    plan = dry_run.check(current_quantize, path, ftype, pin=PIN, imatrix=imatrix if with_imatrix else None,
                         args=args, plan_kwargs=kwargs)
    assert ("fails" if plan.errors else "ok") == meant, f"case no longer tests what it was written for: {plan.errors}"


def test_tensor_type_file_is_read_like_tensor_type(zoo_files, current_quantize, tmp_path):
    path, _ = zoo_files["qwen3moe-128e-24L"]
    f = tmp_path / "types.txt"
    f.write_text("ffn_down_exps=q6_k attn_output=q8_0\n\nblk\\.1\\.=iq4_nl\n")
    dry_run.check(current_quantize, path, "Q3_K_S", pin=PIN, args=["--tensor-type-file", str(f)],
                  plan_kwargs={"tensor_type_file": f})


# Real runs: (id, model, ftype, imatrix: "full" | "none" | ("skip"|"wrong", tensor), options, outcome meant)
REAL = [
    ("agrees-with-dry-run-q4_k_m", "deepseek2-mla-10L", "Q4_K_M", "full", [], "ok"),
    ("agrees-with-dry-run-iq2_xxs", "llama-moe8-gqa2-13L", "IQ2_XXS", "full", [], "ok"),
    ("agrees-with-dry-run-q2_0-prune", "llama-gqa4-16L", "Q2_0", "none", ["--prune-layers", "1,2"], "ok"),
    ("no-imatrix-aborts", "llama-moe8-gqa2-13L", "IQ2_XXS", "none", [], "fails"),
    ("iq3_xxs-no-imatrix-aborts", "llama-gqa4-16L", "IQ3_XXS", "none", [], "fails"),
    # --output-tensor-type returns before the fallback: q6_k on rows of 288 passes a dry run, fails a real one
    ("output-type-no-row-check", "llama-rows288-12L", "Q4_K_M", "none", ["--output-tensor-type", "q6_k"], "fails"),
] + differential.IMATRIX_REAL_RUNS


@pytest.mark.parametrize("model,ftype,imatrix,args,meant", [pytest.param(*c[1:], id=c[0]) for c in REAL])
def test_real_runs(model, ftype, imatrix, args, meant, zoo_files, current_quantize, tmp_path):
    path, _ = zoo_files[model]
    im = zoo.imatrix_for(model, imatrix, zoo_files, tmp_path)
    plan = differential.check(current_quantize, path, ftype, tmp_path, imatrix=im, args=args, pin=PIN)
    assert ("fails" if plan.errors else "ok") == meant, f"case no longer tests what it was written for: {plan.errors}"
    if meant == "ok":  # the dry run says the same, tensor for tensor
        dry_run.check(current_quantize, path, ftype, pin=PIN, imatrix=im, args=args,
                      plan_kwargs=differential.plan_kwargs(args))


def test_per_layer_kv_heads_no_assert(current_quantize, tmp_path):
    """b6700 asserts on n_attention_wv with a zero kv-head layer; this family has no such assert."""
    spec = Spec("llama-kvarr-7L", "llama", 7, n_head=8, n_head_kv=2,
                extra=(("llama.attention.head_count_kv", ("arr", [2, 2, 2, 0, 2, 2, 2])),))
    model = write_model(spec, tmp_path / "m.gguf")
    plan = dry_run.check(current_quantize, model, "Q2_K", pin=PIN)
    assert not plan.errors
