"""Write thin but real GGUF models and imatrix files with the `gguf` package.

Type choice reads only the hyper-parameters, the names, ne[0], the number of dimensions and
whether ne[2] > 1, so thin models keep every tensor's real row length (ne[0]) but only `rows`
rows and `stored_experts` experts: llama-quantize loads and quantizes them in milliseconds.
`rows` must stay >= 2: llama-quantize skips a tensor whose ggml_n_dims() is 1, and ggml counts
a trailing ne[1] == 1 as no dimension at all. `full=True` gives every tensor its real shape,
for header-only use: `write_sparse_split` writes such a model with holes for data (DeepSeek-V3
at real size, a few MB on disk).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType, GGUFWriter


@dataclass(frozen=True)
class Spec:
    name: str
    arch: str  # llama | qwen3moe | deepseek2 | falcon
    n_layer: int
    n_embd: int = 256
    n_ff: int = 512
    n_head: int = 8
    n_head_kv: int = 2
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 256
    leading_dense: int = 0  # blocks before the first MoE block
    shared_experts: int = 0
    attention: str = "gqa"  # gqa | mla (attn_k_b/attn_v_b) | kvb (attn_kv_b) | qkv (fused)
    tied: bool = False  # no output.weight
    rows: int = 2  # ne[1] of every matrix of a thin model
    stored_experts: int = 2  # ne[2] of 3-D tensors of a thin model
    full: bool = False  # real ne[1] and ne[2] everywhere (header-only use)
    n_vocab: int = 32
    q_lora: int = 256
    kv_lora: int = 256
    head_k_mla: int = 192  # MLA: qk_nope + qk_rope
    head_v_mla: int = 128
    qk_rope: int = 64
    head_dim: int = 32
    tokenizer: bool = False  # write a vocabulary (n_vocab tokens, types) and n_merges merges, like real files
    n_merges: int = 0
    extra: tuple = ()

    def _ne(self, ne0: int, ne1: int, ne2: int | None = None) -> tuple[int, ...]:
        """A matrix (ne2 None) or a stack of ne2 matrices, thinned unless `full`."""
        if self.full:
            return (ne0, ne1) if ne2 is None else (ne0, ne1, ne2)
        return (ne0, self.rows) if ne2 is None else (ne0, self.rows, min(ne2, self.stored_experts))

    def tensors(self) -> list[tuple[str, tuple[int, ...], T]]:
        """(name, ne, type) for every tensor, in a natural (converter) order."""
        d, ne = self.n_embd, self._ne
        out = [("token_embd.weight", ne(d, self.n_vocab), T.BF16), ("output_norm.weight", (d,), T.F32)]
        if self.arch == "falcon":
            out.append(("output_norm.bias", (d,), T.F32))
        if not self.tied:
            out.append(("output.weight", ne(d, self.n_vocab), T.BF16))
        for i in range(self.n_layer):
            b = f"blk.{i}."
            out.append((b + "attn_norm.weight", (d,), T.F32))
            if self.arch == "falcon":
                out.append((b + "attn_norm.bias", (d,), T.F32))
            if self.attention in ("mla", "kvb"):
                out += [(b + "attn_q_a_norm.weight", (self.q_lora,), T.F32),
                        (b + "attn_kv_a_norm.weight", (self.kv_lora,), T.F32)]
            out += [(b + n, s, T.BF16) for n, s in self._attention()]
            if self.arch == "qwen3moe":
                out += [(b + "attn_q_norm.weight", (self.head_dim,), T.F32),
                        (b + "attn_k_norm.weight", (self.head_dim,), T.F32)]
            if self.arch != "falcon":
                out.append((b + "ffn_norm.weight", (d,), T.F32))
            if not (self.n_expert > 0 and i >= self.leading_dense):
                out += [(b + "ffn_up.weight", ne(d, self.n_ff), T.BF16),
                        (b + "ffn_down.weight", ne(self.n_ff, d), T.BF16)]
                if self.arch != "falcon":
                    out.append((b + "ffn_gate.weight", ne(d, self.n_ff), T.BF16))
                continue
            e, ff = self.n_expert, self.n_ff_exp
            out += [
                (b + "ffn_gate_inp.weight", ne(d, e), T.F32),
                (b + "ffn_gate_exps.weight", ne(d, ff, e), T.BF16),
                (b + "ffn_up_exps.weight", ne(d, ff, e), T.BF16),
                (b + "ffn_down_exps.weight", ne(ff, d, e), T.BF16),
            ]
            if self.arch == "deepseek2":
                out.append((b + "exp_probs_b.bias", (e,), T.F32))
            if self.shared_experts:
                ff_sh = ff * self.shared_experts
                out += [
                    (b + "ffn_gate_shexp.weight", ne(d, ff_sh), T.BF16),
                    (b + "ffn_up_shexp.weight", ne(d, ff_sh), T.BF16),
                    (b + "ffn_down_shexp.weight", ne(ff_sh, d), T.BF16),
                ]
        return out

    def _attention(self):
        d, ne, h, hd = self.n_embd, self._ne, self.n_head, self.head_dim
        if self.attention == "qkv":
            return [("attn_qkv.weight", ne(d, (h + 2 * self.n_head_kv) * hd)), ("attn_output.weight", ne(h * hd, d))]
        if self.attention in ("mla", "kvb"):
            nope, rope, v = self.head_k_mla - self.qk_rope, self.qk_rope, self.head_v_mla
            out = [
                ("attn_q_a.weight", ne(d, self.q_lora)),
                ("attn_q_b.weight", ne(self.q_lora, h * self.head_k_mla)),
                ("attn_kv_a_mqa.weight", ne(d, self.kv_lora + rope)),
            ]
            if self.attention == "mla":  # kv_b split per head as convert_hf_to_gguf.py does for MLA
                out += [("attn_k_b.weight", ne(nope, self.kv_lora, h)), ("attn_v_b.weight", ne(self.kv_lora, v, h))]
            else:
                out.append(("attn_kv_b.weight", ne(self.kv_lora, h * (nope + v))))
            out.append(("attn_output.weight", ne(h * v, d)))
            return out
        return [
            ("attn_q.weight", ne(d, h * hd)), ("attn_k.weight", ne(d, self.n_head_kv * hd)),
            ("attn_v.weight", ne(d, self.n_head_kv * hd)), ("attn_output.weight", ne(h * hd, d)),
        ]

    def kv(self) -> dict[str, tuple[str, object]]:
        a = self.arch
        kv: dict[str, tuple[str, object]] = {
            f"{a}.context_length": ("u32", 4096),
            f"{a}.embedding_length": ("u32", self.n_embd),
            f"{a}.block_count": ("u32", self.n_layer),
            f"{a}.feed_forward_length": ("u32", self.n_ff),
            f"{a}.attention.head_count": ("u32", self.n_head),
            f"{a}.attention.head_count_kv": ("u32", self.n_head_kv),
            f"{a}.vocab_size": ("u32", self.n_vocab),
        }
        if a == "falcon":
            kv[f"{a}.attention.layer_norm_epsilon"] = ("f32", 1e-5)
        else:
            kv[f"{a}.attention.layer_norm_rms_epsilon"] = ("f32", 1e-6)
        if a in ("llama", "qwen3moe", "falcon"):
            kv[f"{a}.rope.dimension_count"] = ("u32", self.head_dim)
        if self.n_expert:
            kv[f"{a}.expert_count"] = ("u32", self.n_expert)
            kv[f"{a}.expert_used_count"] = ("u32", self.n_expert_used or min(2, self.n_expert))
            kv[f"{a}.expert_feed_forward_length"] = ("u32", self.n_ff_exp)
        if a == "deepseek2":
            kv.update({
                f"{a}.leading_dense_block_count": ("u32", self.leading_dense),
                f"{a}.attention.q_lora_rank": ("u32", self.q_lora),
                f"{a}.attention.kv_lora_rank": ("u32", self.kv_lora),
                f"{a}.attention.key_length": ("u32", self.kv_lora + self.qk_rope),
                f"{a}.attention.value_length": ("u32", self.kv_lora),
                f"{a}.rope.dimension_count": ("u32", self.qk_rope),
                f"{a}.expert_shared_count": ("u32", self.shared_experts),
                f"{a}.expert_weights_scale": ("f32", 2.5),
                f"{a}.expert_weights_norm": ("bool", True),
                f"{a}.expert_gating_func": ("u32", 2),
            })
            if self.attention == "mla":
                kv[f"{a}.attention.key_length_mla"] = ("u32", self.head_k_mla)
                kv[f"{a}.attention.value_length_mla"] = ("u32", self.head_v_mla)
        for k, v in self.extra:
            kv[k] = v
        return kv

    def vocabulary(self) -> dict[str, tuple[str, object]]:
        """tokenizer.ggml.* arrays as a BPE model's converter writes them (strings are placeholders)."""
        if not self.tokenizer:
            return {}
        return {
            "tokenizer.ggml.model": ("str", "gpt2"),
            "tokenizer.ggml.tokens": ("arr", [f"<t{i}>" for i in range(self.n_vocab)]),
            "tokenizer.ggml.token_type": ("arr_i32", [1] * self.n_vocab),
            "tokenizer.ggml.merges": ("arr", [f"m{i} x{i}" for i in range(self.n_merges)]),
        }


def _data(ne: tuple[int, ...], ttype: T, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(reversed(ne))  # numpy order
    x = rng.standard_normal(shape, dtype=np.float32) * 0.02
    if ttype == T.F32:
        return x
    if ttype == T.F16:
        return x.astype(np.float16)
    # BF16: upper 16 bits of the f32 pattern (round toward zero is fine for test data)
    return (x.view(np.uint32) >> 16).astype(np.uint16)


def _writer_kv(w: GGUFWriter, kv: dict):
    for k, (kind, v) in kv.items():
        if kind == "arr_i32":  # typed explicitly: add_array would guess the element type per value
            w.add_key_value(k, v, GGUFValueType.ARRAY, sub_type=GGUFValueType.INT32)
            continue
        adders: dict[str, Callable[..., None]] = {
            "u32": w.add_uint32, "f32": w.add_float32, "bool": w.add_bool, "str": w.add_string,
            "i32": w.add_int32, "u16": w.add_uint16, "arr": w.add_array}
        adders[kind](k, v)


def write_model(spec: Spec, path: str | os.PathLike, *, seed: int = 0, file_type: int = 32) -> Path:
    """Write `spec` as one GGUF file with real (tiny) tensor data."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    w = GGUFWriter(str(path), spec.arch)
    w.add_uint32("general.file_type", file_type)
    _writer_kv(w, spec.kv())
    _writer_kv(w, spec.vocabulary())
    write_tensors(w, ((name, _data(ne, ttype, rng), ttype) for name, ne, ttype in spec.tensors()))
    return path


def write_tensors(w: GGUFWriter, tensors):
    """Add (name, numpy data, type) tensors, BF16 given as uint16 bit patterns, and write the file out."""
    for name, arr, ttype in tensors:
        if ttype == T.BF16:
            w.add_tensor(name, arr, raw_shape=arr.shape, raw_dtype=T.BF16)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_imatrix(spec: Spec, path: str | os.PathLike, *, skip: tuple[str, ...] = (), chunk_size: int = 512,
                  wrong_length: tuple[str, ...] = (), legacy: bool = False) -> Path:
    """An imatrix with an entry for every quantizable matrix (names in `skip` left out): GGUF, or with
    `legacy` the binary .dat format (the only one ik_llama.cpp's llama-quantize reads)."""
    path = Path(path)
    if legacy:
        return _write_legacy_imatrix(spec, path, skip, chunk_size, wrong_length)
    w = GGUFWriter(str(path), "imatrix")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["synthetic"])
    w.add_uint32("imatrix.chunk_count", 1)
    w.add_uint32("imatrix.chunk_size", chunk_size)
    rng = np.random.default_rng(1)
    for name, ne, ttype in spec.tensors():
        if len(ne) < 2 or not name.endswith(".weight") or name in skip or "_norm" in name:
            continue
        n_mat = ne[2] if len(ne) > 2 else 1
        ne0 = ne[0] + (32 if name in wrong_length else 0)
        sums = (rng.random((n_mat, ne0), dtype=np.float32) + 0.5)
        counts = np.full((n_mat, 1), float(chunk_size), dtype=np.float32)
        w.add_tensor(f"{name}.in_sum2", sums)
        w.add_tensor(f"{name}.counts", counts)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _write_legacy_imatrix(spec, path: Path, skip, chunk_size: int, wrong_length) -> Path:
    """int32 entries; per entry: int32 name length, name, int32 ncall, int32 nval, float32[nval] (sums,
    divided by ncall on load); then int32 chunks and the dataset name (load_imatrix in quantize.cpp).
    `spec`: anything with `tensors()` -> (name, ne, type), a Spec or a layout."""
    import struct

    rng = np.random.default_rng(1)
    entries = []
    for name, ne, _ in spec.tensors():
        if len(ne) < 2 or not name.endswith(".weight") or name in skip or "_norm" in name:
            continue
        n = (ne[0] + (32 if name in wrong_length else 0)) * (ne[2] if len(ne) > 2 else 1)
        vals = (rng.random(n, dtype=np.float32) + 0.5) * chunk_size
        entries.append((name.encode(), vals))
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, vals in entries:
            f.write(struct.pack("<i", len(name)) + name + struct.pack("<ii", chunk_size, len(vals)))
            f.write(vals.astype("<f4").tobytes())
        f.write(struct.pack("<ii", 1, len(b"synthetic")) + b"synthetic")
    return path


def write_sparse_split(spec: Spec, prefix: str | os.PathLike, n_split: int, *,
                       kv_extra: dict | None = None) -> list[Path]:
    """Write `spec` as n_split shards whose tensor data regions are holes (never materialised).

    The header is real; data is a sparse extent of the right length, so readers that only
    parse headers see a complete, real-sized model.
    """
    prefix = Path(prefix)
    tensors = spec.tensors()
    per = -(-len(tensors) // n_split)
    paths = []
    for i in range(n_split):
        p = prefix.with_name(f"{prefix.name}-{i + 1:05d}-of-{n_split:05d}.gguf")
        kv = {}
        if i == 0:  # like gguf-split: all metadata in the first shard, split keys in every shard
            kv = {"general.file_type": ("u32", 32), **spec.kv(), **spec.vocabulary(), **(kv_extra or {})}
        kv.update({"split.no": ("u16", i), "split.count": ("u16", n_split),
                   "split.tensors.count": ("i32", len(tensors))})
        paths.append(write_sparse(p, spec.arch, kv, tensors[i * per: (i + 1) * per]))
    return paths


def write_sparse(path: str | os.PathLike, arch: str, kv: dict, tensors) -> Path:
    """One GGUF file with a real header (`kv`, every tensor's name, shape, type) and a data region that is
    a hole of the right length: a real-size model (a 1.3 TB DeepSeek) in a few hundred KB of disk."""
    from qpatch.gguf.catalogue import tensor_bytes

    path = Path(path)
    w = GGUFWriter(str(path), arch)
    _writer_kv(w, kv)
    total = 0
    for name, ne, ttype in tensors:
        nbytes = tensor_bytes(ttype, ne)
        w.add_tensor_info(name, tuple(reversed(ne)), np.dtype(np.float32), nbytes, raw_dtype=ttype)
        total += (nbytes + 31) // 32 * 32
    w.write_header_to_file(path=path)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    with open(path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        pad = (f.tell() + 31) // 32 * 32
        f.truncate(pad + total)  # a hole: the data region is never written
    return path


def deepseek_v3(**changes) -> Spec:
    """DeepSeek-V3 / R1 with the real hyper-parameters and row lengths (MLA as converted for llama.cpp).

    Thin by default; `full=True, tokenizer=True` for the real header (shapes and vocabulary).
    """
    base: dict[str, Any] = dict(
        name="deepseek-v3", arch="deepseek2", n_layer=61, leading_dense=3, n_expert=256, n_expert_used=8,
        shared_experts=1, attention="mla", n_embd=7168, n_ff=18432, n_ff_exp=2048, n_head=128, n_head_kv=1,
        q_lora=1536, kv_lora=512, head_k_mla=192, head_v_mla=128, qk_rope=64, n_vocab=129280, n_merges=127741,
    )
    base.update(changes)
    return Spec(**base)
