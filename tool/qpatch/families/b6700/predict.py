"""How this family's llama-quantize decides every tensor's type, with a policy hooked in.

Per tensor, in llama.cpp's processing order:
  quantized at all? -> ftype default -> stock choice -> policy rule -> shape fallback
  -> --tensor-type (last match wins; skipped after a fallback) -> --token-embedding-type /
  --output-tensor-type -> quantize-loop behaviour (missing imatrix entry, imatrix length mismatch).
"""

from __future__ import annotations

import re

from qpatch.families.b6700.options import OPTIONS
from qpatch.families.base import Family, Walk
from qpatch.families.mainline import FALLBACK, StockModel, StockState, shape_fallback, stock_site
from qpatch.gguf.catalogue import T, block_size, is_quantized
from qpatch.gguf.header import TensorInfo
from qpatch.gguf.imatrix import entry_length
from qpatch.gguf.model_facts import ModelFacts, ggml_n_dims
from qpatch.policy.model import Policy
from qpatch.predict.options import Options
from qpatch.predict.rules import fallback_table

# ftypes llama-quantize refuses to run without an imatrix (main() of quantize.cpp).
NEEDS_IMATRIX = frozenset({"IQ2_XS", "IQ2_XXS", "IQ2_S", "Q2_K_S", "IQ1_S", "IQ1_M"})
# Tensor types the quantize loop refuses without an imatrix entry (llama_model_quantize_impl).
_NEEDS_IMATRIX = frozenset({T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_S})


def is_quantizable(name: str, ndims: int, opts: Options) -> bool:
    """The `quantize &= ...` chain of llama_model_quantize_impl; `ndims` as ggml_n_dims counts them."""
    if not name.endswith("weight") or ndims < 2:
        return False
    if "_norm.weight" in name:
        return False
    if opts.get("leave_output_tensor") and name == "output.weight":
        return False
    if opts.ftype.copy:
        return False
    if "ffn_gate_inp.weight" in name:
        return False
    for s in ("altup", "laurel", "per_layer_model_proj", "ssm_conv1d.weight", "shortconv.conv.weight",
              "attn_rel_b.weight"):
        if s in name:
            return False
    if name in ("position_embd.weight", "token_types.weight"):
        return False
    for s in ("time_mix_first", "time_mix_w0", "time_mix_w1", "time_mix_w2", "time_mix_v0", "time_mix_v1",
              "time_mix_v2", "time_mix_a0", "time_mix_a1", "time_mix_a2", "time_mix_g1", "time_mix_g2",
              "time_mix_decay_w1", "time_mix_decay_w2", "time_mix_lerp_fused"):
        if s + ".weight" in name:
            return False
    return True


class B6700Walk(Walk):
    """llama_model_quantize_impl over one job, in llama.cpp's processing order."""

    def __init__(self, model: ModelFacts, policy: Policy, opts: Options):
        super().__init__(model, policy, opts)
        ft = opts.ftype
        names = [t.name for t in model.tensors]
        self.state = StockState.for_tensors(model, names, opts.has_imatrix)
        self.stock = StockModel(model, ft.name, self.state, opts.get("output_tensor_type"),
                                opts.get("token_embedding_type"))
        self.pol = policy if (not policy.archs or model.arch in policy.archs) else None  # targeted
        self.fb_table = fallback_table(policy, model, FALLBACK)
        if ft.name in NEEDS_IMATRIX and not opts.has_imatrix:
            self.out.fail(f"llama-quantize refuses {ft.name} without an importance matrix (pass --imatrix FILE)")
        n_attn_layer = sum(1 for h in model.n_head_kv_layers[:model.n_layer] if h != 0)
        if model.arch in ("t5", "t5encoder"):  # llama_model_has_encoder: encoder, decoder and cross attention
            n_attn_layer *= 3
        if self.state.n_attention_wv not in (0, n_attn_layer):
            self.out.fail(f"GGML_ASSERT n_attention_wv is unexpected: {self.state.n_attention_wv} attn_v/attn_qkv/"
                          f"attn_kv_b tensors for {n_attn_layer} attention layers")

    def decide(self, t: TensorInfo) -> None:
        opts, ft, name, shape = self.opts, self.opts.ftype, t.name, t.shape
        if not is_quantizable(name, ggml_n_dims(shape), opts):
            self.out.kept(t, ft.copy)
            return
        new, why, fell, chosen = ft.default, "ftype default", False, False
        if opts.get("pure"):
            why = "--pure"
        elif is_quantized(ft.default):
            chosen = True
            new, why = self.stock.choose(name, shape, ft.default)
            new, why = self.apply_policy(t, new, why, stock_site(name))
            try:
                new, fell, fb_why = shape_fallback(new, shape[0], self.fb_table)
            except ValueError as e:
                self.out.fail(f"{name}: {e}")
                fell, fb_why = False, ""
            if fell:
                why = f"{why}; {fb_why}" + (" (policy table)" if self.fb_table is not None else "")
            if opts.overrides and not fell:
                for pat, typ in opts.overrides:  # the last match wins
                    if re.search(pat, name):
                        new, why = typ, f"--tensor-type {pat}={typ.name.lower()}"
        if opts.get("token_embedding_type") is not None and name == "token_embd.weight":
            new, why = opts.get("token_embedding_type"), "--token-embedding-type"
        if opts.get("output_tensor_type") is not None and name == "output.weight":
            new, why = opts.get("output_tensor_type"), "--output-tensor-type"
        if new == t.type:
            self.out.same_type(t, why, fell, chosen)
            return
        new, why = self.quantize_loop(t, new, why)
        if shape[0] % block_size(new) != 0:
            self.out.fail(f"{name}: row length {shape[0]} is not a multiple of {block_size(new)} "
                          f"required by {new.name} (overrides get no shape check)")
        self.out.quantized(t, new, why, fell, chosen)

    def quantize_loop(self, t: TensorInfo, new: T, why: str) -> tuple[T, str]:
        """What llama_model_quantize_impl does after type choice: imatrix lookup and the low-bit check."""
        opts, pol, name, shape = self.opts, self.pol, t.name, t.shape
        has_entry = False
        if opts.imatrix:
            n = opts.imatrix.get(name)
            if n is not None:
                has_entry = n == entry_length(shape)
                if not has_entry and name != "token_embd.weight" and (pol is None or pol.imatrix_mismatch == "abort"):
                    self.out.fail(f"{name}: imatrix size {n} is different from tensor size {entry_length(shape)}")
        if not has_entry:
            needs = new in _NEEDS_IMATRIX or (
                new == T.IQ1_M and name not in ("token_embd.weight", "output.weight")) or (
                new == T.Q2_K and opts.ftype.name == "Q2_K_S" and name != "token_embd.weight")
            if needs:
                if pol is not None and pol.missing_imatrix == "q8_0":
                    return T.Q8_0, f"{why}; no imatrix entry -> Q8_0 ({pol.source})"
                self.out.fail(f"{name}: missing importance matrix for a very low-bit type ({new.name})")
        return new, why


class B6700(Family):
    name = "b6700"
    summary = "llama.cpp 4227c9be / b6700 (October 2025): one llama_tensor_get_type, last --tensor-type match wins"
    options = OPTIONS
    export_formats = ("tensor-type", "tensor-type-file", "custom-q")

    def walk(self, model, policy, opts):
        return B6700Walk(model, policy, opts)

    def override_result(self, stock, override):
        # the list is read only for tensors that went through type choice and did not fall back;
        # an override gets no shape check, so one that does not fit the row aborts the binary
        if not stock.chosen or stock.fell_back:
            return None
        if stock.shape[0] % block_size(override) != 0:
            raise ValueError(f"{stock.name}: {override.name} does not fit rows of {stock.shape[0]}")
        return override

    def unreachable_reason(self, stock, wanted):
        if stock.fell_back:
            return (f"stock's choice does not fit the row (ne0={stock.shape[0]}); after its shape fallback "
                    f"llama-quantize skips --tensor-type")
        return f"{wanted.name} does not fit rows of {stock.shape[0]} and an override gets no shape check"


FAMILY = B6700()
