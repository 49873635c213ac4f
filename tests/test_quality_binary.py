"""qpatch eval and sweep, really run: the current pin's own llama-perplexity (and, for the sweep,
llama-quantize of the patched checkout) on a tiny random DeepSeek-V3-shaped model with the pin's
real DeepSeek vocabulary, measured on the pin's own docs. Numbers of a random model mean nothing
as quality; what is checked is that every number is read, cached, tabulated and plotted, that
more bits give less divergence, and that every error path says what is wrong."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner
from helpers import stock_binary
from helpers.cachelock import file_lock

from qpatch.cli import cli
from qpatch.gguf import tiny_model
from qpatch.gguf.header import read_header
from qpatch.gguf.synth import write_imatrix
from qpatch.quality import evaluation

pytestmark = pytest.mark.binary
PIN = stock_binary.CURRENT_PIN
CTX = ["--ctx", "128", "--chunks", "8"]


@pytest.fixture(scope="module")
def tree():
    stock_binary.stock_tools(PIN, ("llama-quantize", "llama-perplexity"))
    return stock_binary.pin_dir(PIN) / "llama.cpp"


@pytest.fixture(scope="module")
def work(tree, tmp_path_factory):
    """base.gguf (random tiny DeepSeek), two stock quants of it, a text of the pin's docs."""
    d = tmp_path_factory.mktemp("quality")
    base = tiny_model.write(d / "base.gguf", tree / tiny_model.VOCAB, **tiny_model.tiny())
    q = tree / "build-cpu" / "bin" / "llama-quantize"
    quants = {}
    for ft in ("Q2_K", "Q4_K_M"):
        quants[ft] = d / f"base-{ft}.gguf"
        os.system(f"'{q}' '{base}' '{quants[ft]}' {ft} 2 > '{d}/{ft}.log' 2>&1")
        assert quants[ft].exists(), (d / f"{ft}.log").read_text()[-2000:]
    text = d / "docs.txt"
    text.write_text((tree / "docs" / "build.md").read_text() + (tree / "README.md").read_text())
    return d, base, quants, text


def _eval(tree, *args):
    return CliRunner().invoke(cli, ["eval", *map(str, args), "--dir", str(tree), *CTX], catch_exceptions=False)


def test_eval_table_json_csv_and_plot(tree, work):
    d, base, quants, text = work
    r = _eval(tree, base, quants["Q2_K"], quants["Q4_K_M"], "--text", text, "--format", "json", "--plot", d / "e.png")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    q2, q4 = out["quants"]
    assert (q2["ftype"], q4["ftype"]) == ("Q2_K", "Q4_K_M")  # from general.file_type, not the file name
    assert q2["policy"] == "-"  # not made by qpatch: no qpatch.policy key
    assert q4["size_bytes"] > q2["size_bytes"] and q4["bpw"] > q2["bpw"]
    assert 0 < q4["kld_mean"] < q2["kld_mean"]  # more bits, closer to the base
    assert q2["ppl_base"] == pytest.approx(out["base"]["ppl"], rel=1e-6)
    assert out["settings"] == {"ctx": 128, "chunks": 8, "backend": "cpu"}
    assert out["llama_perplexity"].startswith("version:")
    assert (d / "e.png").read_bytes()[:4] == b"\x89PNG"
    t = _eval(tree, base, quants["Q2_K"], "--text", text)
    assert t.exit_code == 0
    assert "base logits cached" in t.stderr  # the first run computed them
    row = next(ln for ln in t.stdout.splitlines() if ln.startswith("base-Q2_K.gguf"))
    assert row.split()[1:3] == ["-", "Q2_K"] and f"{q2['kld_mean']:.5f}" in row
    c = _eval(tree, base, quants["Q4_K_M"], "--text", text, "--format", "csv")
    assert c.stdout.splitlines()[1].startswith(f"base-Q4_K_M.gguf,-,Q4_K_M,-,{quants['Q4_K_M']},")


def test_base_logits_are_cached_by_content(tree, work, tmp_path):
    _, base, _, text = work
    ev = evaluation.Evaluator(tree, evaluation.Settings(ctx=128, chunks=8, threads=2), cache_dir=tmp_path)
    first = ev.base(base, text)
    mtime = first.logits.stat().st_mtime_ns
    again = ev.base(base, text)
    assert (first.cached, again.cached) == (False, True) and again.logits == first.logits
    assert again.logits.stat().st_mtime_ns == mtime and again.ppl == first.ppl
    other = tmp_path / "other.txt"
    other.write_text(text.read_text()[1000:])  # other text: other logits
    assert not ev.base(base, other).cached
    assert len(list(tmp_path.glob("*.kld"))) == 2


def test_eval_errors_say_what_is_wrong(tree, work, tmp_path):
    _, base, quants, text = work
    r = _eval(tree, base, quants["Q2_K"], "--text", tmp_path / "missing.txt")
    assert r.exit_code == 10 and "text file" in r.stderr and "does not exist" in r.stderr
    other = tiny_model.write(tmp_path / "other.gguf", tree / tiny_model.VOCAB, **tiny_model.tiny(n_layer=4))
    r = _eval(tree, base, other, "--text", text)
    assert r.exit_code == 10 and "is not a quantization of" in r.stderr and "only in the quant" in r.stderr
    # same tensors, but metadata this pin rejects on load (kv_lora_rank says 128, tensors are 256 wide)
    bad = tiny_model.write(tmp_path / "bad.gguf", tree / tiny_model.VOCAB,
                           **tiny_model.tiny(extra=(("deepseek2.attention.kv_lora_rank", ("u32", 128)),)))
    r = _eval(tree, base, bad, "--text", text)
    assert r.exit_code == 10 and "could not load" in r.stderr, r.stderr


def test_verify_without_policy_needs_a_file_qpatch_made(work):
    _, _, quants, _ = work
    r = CliRunner().invoke(cli, ["verify", str(quants["Q2_K"])])
    assert r.exit_code == 2 and "does not say which policy made it" in r.stderr and "--policy" in r.stderr


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is present here")
def test_eval_on_cuda_without_a_gpu_is_refused(tree, work):
    _, base, quants, text = work
    r = _eval(tree, base, quants["Q2_K"], "--text", text, "--backend", "cuda")
    assert r.exit_code == 10 and "needs an NVIDIA GPU" in r.stderr


@pytest.mark.xdist_group("patched-current")
def test_sweep_measures_caches_and_keeps_going(current_patched_build, work, tmp_path):
    """2 policies x 2 ftypes; the imatrix lacks one tensor, so stock IQ2_XXS cannot run (deepseek-v3 falls back
    to Q8_0 there): one failure, reported, the other three measured; a re-run measures nothing again."""
    _, base, _, text = work
    co = current_patched_build.path
    s = tiny_model.spec(tiny_model.vocabulary(co / tiny_model.VOCAB)[0], **tiny_model.tiny())
    imatrix = write_imatrix(s, tmp_path / "im.gguf", skip=("blk.2.ffn_up_exps.weight",))
    args = ["sweep", str(base), "-p", "stock,deepseek-v3", "-f", "Q2_K,IQ2_XXS", "--imatrix", str(imatrix), "--text",
            str(text), *CTX, "--dir", str(co), "--out", str(tmp_path / "out"), "--plot", str(tmp_path / "s.png")]
    with file_lock(current_patched_build.lock):  # the sweep switches policies in the shared patched checkout
        r = CliRunner().invoke(cli, args, catch_exceptions=False)
        again = CliRunner().invoke(cli, args + ["--format", "json"], catch_exceptions=False)
    assert r.exit_code == 1, r.output
    assert "4 jobs: 3 measured, 0 from" in r.stderr and "1 failed" in r.stderr
    rows = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.startswith(("stock-", "deepseek-v3-"))}
    assert sorted(rows) == ["deepseek-v3-IQ2_XXS", "deepseek-v3-Q2_K", "stock-Q2_K"]
    assert "  stock-IQ2_XXS: llama-quantize would fail" in r.stdout and "blk.2.ffn_up_exps.weight" in r.stdout
    q = read_header(tmp_path / "out" / "base-deepseek-v3-IQ2_XXS.gguf").kv
    assert (q["qpatch.policy"], q["qpatch.pin"]) == ("deepseek-v3", PIN)  # written by qpatch quantize
    v = CliRunner().invoke(cli, ["verify", str(tmp_path / "out" / "base-deepseek-v3-IQ2_XXS.gguf"),
                                 "--source", str(base), "--imatrix", str(imatrix)])  # policy and pin read from the file
    assert v.exit_code == 0 and "policy=deepseek-v3" in v.stdout and "OK: every tensor" in v.stdout
    assert (tmp_path / "s.png").exists()
    assert "4 jobs: 0 measured, 3 from" in again.stderr and "1 failed" in again.stderr
    first = {row[0]: row for row in rows.values()}
    for q in json.loads(again.stdout)["quants"]:
        if q["status"] == "ok":
            assert f"{q['kld_mean']:.5f}" in first[q["name"]]  # the cached numbers are the measured ones


def test_import_of_a_real_quantized_gguf_round_trips(work, tmp_path):
    """A GGUF stock llama-quantize wrote, with two overrides: imported, the policy's plan is the file's types."""
    _, base, _, _ = work
    tree = stock_binary.pin_dir(PIN) / "llama.cpp"
    quant = tmp_path / "q.gguf"
    q = tree / "build-cpu" / "bin" / "llama-quantize"
    os.system(f"'{q}' --tensor-type ffn_down_exps=q6_k --tensor-type 'blk\\.1\\.attn_output=q8_0' '{base}' '{quant}' "
              f"Q3_K_M 2 > '{tmp_path}/q.log' 2>&1")
    assert quant.exists(), (tmp_path / "q.log").read_text()[-2000:]
    out = tmp_path / "mine"
    r = CliRunner().invoke(cli, ["import", "from-file", "--gguf", str(quant), "--model", str(base), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "round trip: the policy gives all" in r.stdout and "the types of q.gguf" in r.stdout
    src = (out / "from_file.py").read_text()
    assert "rule('ffn_down_exps', T.Q6_K)" in src and "rule(in_blocks('attn_output', '1'), T.Q8_0)" in src
    plan = CliRunner().invoke(cli, ["--policies", str(out), "plan", str(base), "-f", "Q3_K_M", "--policy", "from-file",
                                    "--format", "json"])
    have = {t.name: t.type.name for t in read_header(quant).tensors}
    assert {t["name"]: t["type"] for t in json.loads(plan.stdout)["tensors"]} == have
