"""qpatch eval/sweep without a binary: llama-perplexity's output as it really prints it, the tables,
the plot, the tiny model's GGUF. The runs themselves are in test_quality_binary.py."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from qpatch.errors import EvalError, ModelError
from qpatch.gguf import tiny_model
from qpatch.gguf.header import read_header
from qpatch.quality import perplexity, tables

LOGS = Path(__file__).parent / "golden" / "perplexity"  # captured from 0c1e57098's llama-perplexity (CPU)


def test_parse_kld_reads_every_statistic():
    s = perplexity.parse_kld((LOGS / "kld.log").read_text())
    assert (s.ppl, s.ppl_unc, s.ppl_base) == (34596.958359, 462.985273, 34707.515585)
    assert (s.ppl_ratio, s.ln_ppl_ratio) == (0.996815, -0.00319)
    assert (s.kld_mean, s.kld_unc, s.kld_median, s.kld_p99, s.kld_max) == \
        (0.03504, 0.00034, 0.034159, 0.054571, 0.058004)
    assert (s.same_top, s.same_top_unc, s.rms_dp) == (8.929, 1.271, 0.001)


def test_parse_base_reads_the_final_estimate():
    assert perplexity.parse_base((LOGS / "base.log").read_text()) == (34707.5277, 491.68062)


def test_too_few_tokens_is_an_error_that_says_why():
    """llama-perplexity exits 0 but prints no statistics under 100 scored tokens (63 here)."""
    with pytest.raises(EvalError, match=r"no 'Mean PPL\(Q\)' line \(it prints statistics only for 100 or more"):
        perplexity.parse_kld((LOGS / "kld-63-tokens.log").read_text(), Path("q.log"))


def test_a_run_that_printed_nothing_useful_names_its_error_lines():
    text = "0.00.1 I load\n0.00.2 E llama_model_load: error loading model: tensor 'x' has wrong shape\nbye\n"
    with pytest.raises(EvalError, match="error loading model") as e:
        perplexity.parse_base(text, Path("b.log"))
    assert "log: b.log" in str(e.value)


def _row(name, policy, ftype, size, kld, **kw):
    return {"name": name, "policy": policy, "ftype": ftype, "size_bytes": size, "bpw": 8 * size / 1e6, "ppl": 10 + kld,
            "ppl_ratio": 1 + kld, "kld_mean": kld, "kld_median": kld / 2, "kld_p99": kld * 5, "same_top": 90.0,
            "status": "ok", **kw}


BASE = {"name": "m.gguf", "size_bytes": 4 * 2**20, "bpw": 16.0, "ppl": 10.0, "ppl_unc": 0.1}
ROWS = [_row("a-Q2_K", "a", "Q2_K", 2**20, 0.03), _row("b-Q2_K", "b", "Q2_K", 2**20 + 100, 0.02),
        _row("a-Q4_K_M", "a", "Q4_K_M", 2 * 2**20, 0.01), _row("b-Q4_K_M", "b", "Q4_K_M", 3 * 2**20, 0.015),
        {"name": "c-Q2_K", "policy": "c", "ftype": "Q2_K", "status": "failed (quantize)",
         "error": "llama-quantize would fail: missing imatrix\nmore"}]


def test_table_lists_measured_rows_and_names_failures():
    t = tables.table(BASE, ROWS)
    lines = t.splitlines()
    assert lines[0].startswith("base: m.gguf  4.00 MiB  16.000 bpw  PPL 10.0000 ± 0.1000")
    assert lines[2].split() == ["quant", "policy", "ftype", "MiB", "bpw", "PPL", "PPL/base", "mean", "KLD", "median",
                                "KLD", "p99", "KLD", "same", "top", "%"]
    assert [ln.split()[0] for ln in lines[4:8]] == ["a-Q2_K", "b-Q2_K", "a-Q4_K_M", "b-Q4_K_M"]
    assert lines[-2:] == ["1 job(s) failed:", "  c-Q2_K: llama-quantize would fail: missing imatrix"]


def test_csv_and_json_carry_every_row():
    rows = list(csv.DictReader(io.StringIO(tables.to_csv(ROWS))))
    assert [r["name"] for r in rows] == ["a-Q2_K", "b-Q2_K", "a-Q4_K_M", "b-Q4_K_M", "c-Q2_K"]
    assert rows[-1]["status"] == "failed (quantize)" and rows[0]["status"] == "ok"
    d = json.loads(tables.to_json(BASE, ROWS, {"settings": {"ctx": 128}}))
    assert d["settings"] == {"ctx": 128} and d["base"] == BASE and len(d["quants"]) == 5


def test_pareto_front_keeps_only_rows_nothing_beats():
    assert [r["name"] for r in tables.pareto(ROWS)] == ["a-Q2_K", "b-Q2_K", "a-Q4_K_M"]


def test_plot_writes_a_png(tmp_path):
    p = tables.plot(BASE, ROWS, tmp_path / "sub" / "p.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def _vocab(tmp_path, n=300) -> Path:
    """A small vocabulary GGUF shaped like the pin's models/ggml-vocab-*.gguf files."""
    from gguf import GGUFWriter

    p = tmp_path / "vocab.gguf"
    w = GGUFWriter(str(p), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(n)])
    w.add_token_types([1] * n)
    w.add_bos_token_id(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return p


def test_tiny_model_is_a_deepseek2_gguf_with_the_vocabulary(tmp_path):
    path = tiny_model.write(tmp_path / "m.gguf", _vocab(tmp_path), **tiny_model.tiny())
    h = read_header(path)
    kv = h.kv
    assert kv["general.architecture"] == "deepseek2" and kv["general.file_type"] == 32
    assert kv["tokenizer.ggml.bos_token_id"] == 1 and kv["deepseek2.vocab_size"] == 300
    assert kv["deepseek2.expert_count"] == 16 and kv["deepseek2.expert_gating_func"] == 2
    names = {t.name: t for t in h.tensors}
    assert names["blk.1.attn_k_b.weight"].shape == (64, 256, 4)  # qk_nope, kv_lora, heads: as the converter splits
    assert names["blk.1.ffn_down_exps.weight"].shape == (256, 256, 16)
    assert "blk.0.ffn_gate_inp.weight" not in names and names["blk.0.ffn_down.weight"].shape == (512, 256)  # dense lead
    assert names["blk.1.ffn_gate_inp.weight"].type.name == "F32"
    assert names["blk.1.ffn_up_exps.weight"].type.name == "BF16"


def test_tiny_model_refuses_weights_that_do_not_fit(tmp_path):
    s = tiny_model.spec(300, **tiny_model.tiny())
    w = tiny_model.random_weights(s)
    w["blk.1.attn_output.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ModelError, match=r"blk.1.attn_output.weight: weights of shape \(3, 3\)"):
        tiny_model.write(tmp_path / "m.gguf", _vocab(tmp_path), weights=w, **tiny_model.tiny())


def test_bf16_rounds_to_nearest_even():
    x = np.array([1.0, 1.00390625, 1.005859375, -2.5], np.float32)  # 1 + 2^-8 is a tie: rounds to 1.0
    assert tiny_model._bf16(x).tolist() == [0x3F80, 0x3F80, 0x3F81, 0xC020]
