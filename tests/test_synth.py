"""synth: sparse split models read back exactly as specified, and stay sparse."""

from __future__ import annotations

import os

from qpatch.gguf.model_facts import read_model
from qpatch.gguf.synth import Spec, deepseek_v3, write_sparse_split


def test_sparse_split_reads_back_as_specified(tmp_path):
    spec = deepseek_v3(n_layer=6, n_expert=32, full=True, tokenizer=True)
    shards = write_sparse_split(spec, tmp_path / "DSV3", 3)
    assert [p.name for p in shards] == [f"DSV3-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    m = read_model(shards[0])
    assert (m.arch, m.n_layer, m.n_expert, m.n_head, m.n_head_kv, m.n_vocab) == ("deepseek2", 6, 32, 128, 1, 129280)
    assert m.shards == tuple(str(p) for p in shards)
    assert {t.name: (t.shape, t.type) for t in m.tensors} == {n: (ne, t) for n, ne, t in spec.tensors()}
    assert m.by_name["blk.5.ffn_down_exps.weight"].shape == (2048, 7168, 32)  # real ne[1] and ne[2]
    assert m.by_name["blk.0.attn_k_b.weight"].shape == (128, 512, 128)
    apparent = sum(os.stat(p).st_size for p in shards)
    on_disk = sum(os.stat(p).st_blocks * 512 for p in shards)
    assert apparent > 10 * 2**30 and on_disk < 16 * 2**20  # tens of GiB of holes, a few MiB written


def test_thin_shapes_keep_row_lengths():
    thin = {n: ne for n, ne, _ in Spec("t", "deepseek2", 2, n_expert=4, leading_dense=1, attention="mla").tensors()}
    assert thin["blk.1.ffn_down_exps.weight"] == (256, 2, 2)
    assert thin["blk.0.attn_k_b.weight"] == (128, 2, 2)
    assert thin["output.weight"] == (256, 2)
