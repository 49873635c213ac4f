"""Shelves and `qpatch assemble`, proven against the real binary.

The claim: a mix put together from shelves (one real llama-quantize run per type, made with a checkout
that has no policy applied) is, byte for byte, the file `qpatch quantize` writes with the policy compiled
in: every shipped policy, at several ftypes, with and without an imatrix, on a DeepSeek MLA model and one
whose rows force fallbacks, on the default pin and on ik_llama.cpp (row-interleaved `_R4` types too).
Whole files are compared, so tensor data, tensor infos and every key/value are the same.
Then: a mix of links to shelf shards loads in llama-quantize and llama-perplexity and gives exactly the
numbers of the same mix written as one file; and every bad input is an error with its exit code.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner
from helpers import stock_binary, zoo

from qpatch.cli import cli
from qpatch.gguf.header import read_layout
from qpatch.gguf.synth import Spec, write_imatrix, write_model
from qpatch.job import Job
from qpatch.progress import Progress
from qpatch.quantize import runner
from qpatch.shelves import assemble, shelf

pytestmark = pytest.mark.binary
CUR = stock_binary.CURRENT_PIN
MODELS = ("deepseek2-mla-10L", "llama-rows288-12L")  # MLA (attn_k_b rows of 128 fall back); rows of 288: fallbacks
FTYPES = {"full": ("IQ2_XXS", "IQ2_M", "Q2_K", "Q3_K_M", "Q4_K_M"), "none": ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M")}
POLICIES = ("stock", "n-expert-fix", "ffn-down-bump", "deepseek-v3")


def _jobs(model, imatrix, pin, policies, ftypes):
    for pol in policies:
        for ft in ftypes:
            job = Job.create(model, ft, policy=pol, pin=pin, imatrix=imatrix)
            if not job.plan().errors:
                yield job


@pytest.fixture(scope="module")
def stock_tree():
    """The default pin's checkout with nothing applied: shelves come from stock llama-quantize."""
    stock_binary.stock_tools(CUR, ("llama-quantize", "llama-perplexity"))
    return stock_binary.pin_dir(CUR) / "llama.cpp"


@pytest.fixture(scope="module")
def current_shelves(stock_tree, zoo_files, tmp_path_factory):
    """(model, imatrix kind) -> shelf directory holding every type the cases' plans need."""
    d = tmp_path_factory.mktemp("shelves")
    out = {}
    for m in MODELS:
        for im in FTYPES:
            model, imatrix = zoo_files[m][0], (zoo_files[m][1] if im == "full" else None)
            types = shelf.types_for(j.plan() for j in _jobs(model, imatrix, CUR, POLICIES, FTYPES[im]))
            shelf.make(model, types, d / f"{m}-{im}", checkout=stock_tree, imatrix=imatrix, threads=2)
            out[m, im] = d / f"{m}-{im}"
    return out


def _same_file(a, b) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


@pytest.mark.xdist_group("patched-current")
@pytest.mark.parametrize("policy", POLICIES)
def test_assembled_equals_quantized_current(policy, current_patched_build, current_shelves, zoo_files, tmp_path):
    current_patched_build.switch(policy)
    n = 0
    for m in MODELS:
        for im, ftypes in FTYPES.items():
            model, imatrix = zoo_files[m][0], (zoo_files[m][1] if im == "full" else None)
            for job in _jobs(model, imatrix, CUR, (policy,), ftypes):
                ft = job.options.ftype.name
                real, asm = tmp_path / f"{m}-{im}-{ft}.gguf", tmp_path / f"{m}-{im}-{ft}-asm.gguf"
                r, _ = runner.quantize(current_patched_build.path, model, real, ft, policy=policy, imatrix=imatrix,
                                       threads=2)
                assert r.ok
                assemble.assemble(model, asm, shelves_dir=current_shelves[m, im], policy=policy, ftype=ft,
                                  imatrix=imatrix)
                assert _same_file(real, asm), f"{policy} {m} {ft} imatrix={im}: assembled file differs"
                n += 1
    assert n >= 2 * (4 + 4) - 2  # a case the plan refuses (llama-quantize would abort) is skipped, not many


# ------------------------------------------------------------------------------------------ ik_llama.cpp

IK_SPECS = (Spec("ik-dsv2-mla-10L", "deepseek2", 10, n_head=8, n_head_kv=1, n_expert=64, n_expert_used=6,
                 leading_dense=3, shared_experts=1, attention="mla", n_ff=1024, rows=16, kv_lora=512),
            Spec("ik-rows288-12L", "llama", 12, n_embd=288, n_head=9, n_head_kv=3, n_ff=608, rows=16))
IK_FTYPES = {"full": ("IQ2_KS", "IQ4_K_R4", "IQ3_K", "Q4_K_M"), "none": ("Q4_K_M", "IQ4_K_R4", "IQ4_KS", "Q6_K")}
IK_POLICIES = ("stock", "ffn-down-bump", "deepseek-v3-ik")


@pytest.mark.xdist_group("patched-ik")
def test_assembled_equals_quantized_ik(tmp_path):
    from helpers.ik_llama_build import BUILDS, IK_PIN

    BUILDS.ensure()
    models = {}
    for s in IK_SPECS:
        model, im = tmp_path / f"{s.name}.gguf", tmp_path / f"{s.name}.imatrix.dat"  # ik reads the legacy format
        write_model(s, model)
        write_imatrix(s, im, legacy=True)
        models[s.name] = (model, im)
    BUILDS.switch("stock")
    dirs = {}
    for name, (model, im) in models.items():
        for kind in IK_FTYPES:
            imatrix = im if kind == "full" else None
            types = shelf.types_for(j.plan() for j in _jobs(model, imatrix, IK_PIN, IK_POLICIES, IK_FTYPES[kind]))
            assert types, f"{name}: every case's plan fails"
            dirs[name, kind] = shelf.make(model, types, tmp_path / f"sh-{name}-{kind}", checkout=BUILDS.path,
                                          imatrix=imatrix, threads=2).dir
    interleaved = n = 0
    for policy in IK_POLICIES:
        BUILDS.switch(policy)
        for name, (model, im) in models.items():
            for kind, ftypes in IK_FTYPES.items():
                imatrix = im if kind == "full" else None
                for job in _jobs(model, imatrix, IK_PIN, (policy,), ftypes):
                    ft = job.options.ftype.name
                    real, asm = tmp_path / f"{policy}-{name}-{ft}-{kind}.gguf", tmp_path / "asm.gguf"
                    r, _ = runner.quantize(BUILDS.path, model, real, ft, policy=policy, imatrix=imatrix, threads=2)
                    assert r.ok
                    assemble.assemble(model, asm, shelves_dir=dirs[name, kind], policy=policy, ftype=ft,
                                      imatrix=imatrix, force=True)
                    assert _same_file(real, asm), f"ik {policy} {name} {ft} imatrix={kind}: assembled file differs"
                    interleaved += any(t.type.name.endswith(("_R4", "_R8")) for t in job.plan().tensors)
                    n += 1
    assert n >= 20 and interleaved >= 4


# ------------------------------------------------------------------------------------- links and loading


@pytest.fixture(scope="module")
def tiny(stock_tree, tmp_path_factory):
    """A random tiny DeepSeek with the real vocabulary (llama-perplexity runs it), shelved at Q8_0 and Q4_0."""
    from qpatch.gguf import tiny_model

    d = tmp_path_factory.mktemp("tiny")
    base = tiny_model.write(d / "base.gguf", stock_tree / tiny_model.VOCAB, **tiny_model.tiny())
    sset = shelf.make(base, ["q8_0", "q4_0"], d / "sh", checkout=stock_tree, threads=2)
    text = d / "docs.txt"
    text.write_text((stock_tree / "docs" / "build.md").read_text())
    return d, base, sset, text


def test_links_load_in_llama_quantize_and_perplexity(tiny, stock_tree):
    from qpatch.gguf.catalogue import T

    d, base, sset, text = tiny
    q8, q4 = sset.shelves[T.Q8_0], sset.shelves[T.Q4_0]
    g = next(g for g in sset.groups if "ffn_down_exps" in g.name)
    types = {n: (q4 if n in g.tensors else q8).tensors[n].type for n in sset.order}
    kv = [(k, raw) for k, raw in read_layout(sset.metadata_shard()).kv if not k.startswith("split.")]
    src = shelf.source_tensors(base)
    (d / "links").mkdir()
    linked = assemble.write_mix(sset, types, d / "links" / "mix.gguf", kv=kv, source=src, links=True)
    one = assemble.write_mix(sset, types, d / "mix.gguf", kv=kv, source=src)
    assert linked.linked == len(sset.groups) and linked.written == 1 and linked.bytes_written == 0
    assert all(p.is_symlink() for p in linked.files[1:])
    bindir = stock_tree / "build-cpu" / "bin"
    # llama-quantize reads the split model: COPY writes it back as one file, the same tensor data
    merged = d / "merged.gguf"
    subprocess.run([bindir / "llama-quantize", linked.path, merged, "COPY"], check=True, capture_output=True)
    a, b = read_layout(merged), read_layout(one.path)
    assert [(t.name, t.type_id) for t in a.tensors] == [(t.name, t.type_id) for t in b.tensors]
    with open(merged, "rb") as fa, open(one.path, "rb") as fb:
        fa.seek(a.data_offset)
        fb.seek(b.data_offset)
        assert fa.read() == fb.read()
    # llama-perplexity: the same numbers from the links as from the file
    outs = []
    for m in (linked.path, one.path):
        r = subprocess.run([bindir / "llama-perplexity", "-m", m, "-f", text, "-c", "128", "--chunks", "2", "-t", "2"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(re.findall(r"Final estimate: PPL = \S+ \+/- \S+", r.stdout + r.stderr))
    assert len(outs[0]) == 1 and outs[0] == outs[1]


def test_resume_keeps_shelves_and_ignores_interrupted_ones(tiny, stock_tree):
    from qpatch.gguf.catalogue import T

    d, base, sset, _ = tiny
    shard = sset.shelves[T.Q4_0].shard_path(1)
    before = shard.stat().st_mtime_ns
    (sset.dir / ".tmp-Q5_0-999").mkdir()  # what a killed run leaves
    (sset.dir / ".tmp-Q5_0-999" / "Q5_0.gguf").write_bytes(b"GGUF partial")
    (sset.dir / "Q6_K").mkdir()  # a shelf with no index: never trusted
    notes = []

    class P(Progress):
        def note(self, msg):
            notes.append(msg)

    again = shelf.make(base, ["q4_0", "q8_0"], sset.dir, checkout=stock_tree, threads=2, progress=P())
    assert shard.stat().st_mtime_ns == before
    assert all("kept" in n for n in notes) and len(notes) == 2
    assert not (sset.dir / ".tmp-Q5_0-999").exists() and T.Q6_K not in again.shelves
    shutil.rmtree(sset.dir / "Q6_K")


# ------------------------------------------------------------------------------------------- bad input


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_bad_inputs(tiny, stock_tree, tmp_path):
    from qpatch.gguf.catalogue import T

    d, base, sset, _ = tiny
    other = tmp_path / "other.gguf"
    shutil.copy(base, other)
    with open(other, "r+b") as f:  # same header, other data
        f.seek(-64, os.SEEK_END)
        f.write(b"\x01" * 64)
    r = _run("assemble", other, tmp_path / "o.gguf", "--shelves", sset.dir, "-f", "Q8_0")
    assert r.exit_code == 11 and "model: these shelves were made from" in r.stderr
    im = tmp_path / "im.gguf"
    write_imatrix(zoo.BY_NAME["deepseek2-mla-10L"], im)
    r = _run("assemble", base, tmp_path / "o.gguf", "--shelves", sset.dir, "-f", "Q8_0", "--imatrix", im)
    assert r.exit_code == 11 and "imatrix: these shelves were made from none" in r.stderr
    r = _run("assemble", base, tmp_path / "o.gguf", "--shelves", sset.dir, "-f", "Q8_0", "--pin", "4227c9be")
    assert r.exit_code == 11 and "pin: these shelves were made from 0c1e57098, not 4227c9be" in r.stderr
    r = _run("assemble", base, tmp_path / "o.gguf", "--shelves", sset.dir, "-f", "Q4_K_M")
    assert r.exit_code == 11 and "qpatch shelves MODEL --types" in r.stderr and "q4_k" in r.stderr
    r = _run("assemble", base, tmp_path / "o.gguf", "--shelves", tmp_path, "-f", "Q8_0")
    assert r.exit_code == 11 and "no shelves here" in r.stderr
    # another binary: shelves from another build of the pin are not mixed into this set
    fake = tmp_path / "co"
    shutil.copytree(stock_tree / ".git", fake / ".git", symlinks=True)
    (fake / "build-cpu" / "bin").mkdir(parents=True)
    (fake / "build-cpu" / "bin" / "llama-quantize").write_bytes(b"#!/bin/sh\nexit 1\n")
    r = _run("shelves", base, "--types", "q5_0", "--out", sset.dir, "--dir", fake)
    assert r.exit_code == 11 and "binary: these shelves were made from" in r.stderr
    # an output that exists; a directory that cannot be written
    out = tmp_path / "o.gguf"
    out.write_bytes(b"mine")
    r = _run("assemble", base, out, "--shelves", sset.dir, "-f", "Q8_0")
    assert r.exit_code == 2 and "exists" in r.stderr and out.read_bytes() == b"mine"
    r = _run("assemble", base, "/proc/qpatch-test.gguf", "--shelves", sset.dir, "-f", "Q8_0")
    assert r.exit_code == 2 and "cannot write" in r.stderr and "Traceback" not in r.output
    # a missing and a truncated shard
    q4 = sset.shelves[T.Q4_0]
    shard = q4.shard_path(3)
    saved = shard.read_bytes()
    try:
        shard.unlink()
        r = _run("assemble", base, tmp_path / "m.gguf", "--shelves", sset.dir, "-f", "Q8_0")
        assert r.exit_code == 3 and "missing shard 4 of" in r.stderr
        shard.write_bytes(saved[:-10])
        r = _run("assemble", base, tmp_path / "m.gguf", "--shelves", sset.dir, "-f", "Q8_0")
        assert r.exit_code == 3 and "truncated or changed" in r.stderr
    finally:
        shard.write_bytes(saved)
    r = _run("assemble", base, tmp_path / "m.gguf", "--shelves", sset.dir, "-f", "Q8_0", "--links")
    assert r.exit_code == 0, r.output
    assert "shards linked" in r.stdout and (tmp_path / f"m-00001-of-{sset.n_shards:05d}.gguf").is_file()
    v = _run("verify", tmp_path / f"m-00001-of-{sset.n_shards:05d}.gguf")
    assert v.exit_code == 0 and "OK: every tensor has the predicted type" in v.stdout
