"""How this family's llama-quantize decides every tensor's type, with a policy hooked in.

llama_model_quantize_impl, step by step:
  --prune-layers drops and renumbers blocks -> counters over the kept tensors -> per tensor, in
  processing order (the preliminary loop): quantizable? -> --token-embedding-type /
  --output-tensor-type return at once -> the first matching --tensor-type replaces the mix, else
  (no --pure) the mix and then the policy -> the shape fallback (policy table first) -> the
  policy's answer to a missing imatrix -> no imatrix for a type that needs one: a real run
  throws, --dry-run only warns; then (real runs only) the main loop's imatrix lookup.
"""

from __future__ import annotations

import dataclasses
import re

from qpatch.families.base import Family, Walk
from qpatch.families.current.options import OPTIONS
from qpatch.families.current.stock import (
    ABORTS_WITHOUT_WEIGHTS,
    OUTPUT,
    TOKEN_EMBD,
    NoFallback,
    StockModel,
    StockState,
    category,
    requires_imatrix,
    shape_fallback,
    stock_site,
)
from qpatch.gguf.catalogue import T, block_size, is_quantized
from qpatch.gguf.header import TensorInfo
from qpatch.gguf.imatrix import entry_length
from qpatch.gguf.model_facts import ModelFacts, ggml_n_dims
from qpatch.policy.model import Policy
from qpatch.predict.options import Options

_NEVER = ("ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
          "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
          "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
          "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
          "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
          "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
          "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos",
          ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd")
_NEVER_GLM5_NEXT = ("hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
                    "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight",
                    "ssm_g_b.weight", "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight",
                    "attn_v_b.weight")


def is_quantizable(name: str, ndims: int, arch: str, opts: Options) -> bool:
    """tensor_allows_quantization; `ndims` as ggml_n_dims counts them."""
    if opts.ftype.copy or ndims < 2:
        return False
    if not name.endswith("weight") or "_norm.weight" in name:
        return False
    if opts.get("leave_output_tensor") and name == "output.weight":
        return False
    if any(s in name for s in _NEVER):
        return False
    if name in ("position_embd.weight", "token_types.weight"):
        return False
    if arch == "glm5-next" and any(s in name for s in _NEVER_GLM5_NEXT):
        return False
    return True


_BLK = re.compile(r"^blk\.(\d+)\.")


def prune(model: ModelFacts, layers: tuple[int, ...]) -> tuple[ModelFacts, dict[str, str]]:
    """remap_layer over the processing order: the kept tensors, renamed; new name -> original name."""
    if not layers:
        return model, {t.name: t.name for t in model.tensors}
    mapped: dict[int, str] = {}
    next_id = 0
    kept, origin = [], {}
    for t in model.tensors:
        m = _BLK.match(t.name)
        if not m:
            kept.append(t)
            origin[t.name] = t.name
            continue
        blk = int(m.group(1))
        if blk not in mapped:
            if blk in layers:
                mapped[blk] = ""
            elif blk < layers[0]:
                mapped[blk] = str(blk)
                next_id = blk + 1
            else:
                mapped[blk] = str(next_id)
                next_id += 1
        if not mapped[blk]:
            continue
        new = t.name[:m.start(1)] + mapped[blk] + t.name[m.end(1):]
        kept.append(dataclasses.replace(t, name=new))
        origin[new] = t.name
    return dataclasses.replace(model, tensors=tuple(kept)), origin


class CurrentWalk(Walk):
    """llama_model_quantize_impl over one job: the kept tensors (after --prune-layers) in processing order."""

    def __init__(self, model: ModelFacts, policy: Policy, opts: Options):
        pruned, self.origin = prune(model, opts.get("prune_layers", ()))
        super().__init__(model, policy, opts, order=pruned.tensors, counted=pruned)
        names = [t.name for t in pruned.tensors]
        state = StockState.for_tensors(model, names, opts.has_imatrix)
        self.stock = StockModel(model, opts.ftype.name, state, opts.get("output_tensor_type"))
        self.pol = policy if (not policy.archs or model.arch in policy.archs) else None  # targeted
        self.fb_table = dict(policy.fallback) if (self.pol is not None and policy.fallback is not None) else None

    def decide(self, t: TensorInfo) -> None:
        opts, ft, pol, name, shape = self.opts, self.opts.ftype, self.pol, t.name, t.shape
        if not is_quantizable(name, ggml_n_dims(shape), self.model.arch, opts):
            self.out.kept(t, ft.copy)
            return
        cat = category(name)
        new, why, fell, chosen = ft.default, "ftype default", False, False
        named = name == "per_layer_token_embd.weight" and any(re.search(p, name) for p, _ in opts.overrides)
        if opts.get("token_embedding_type") is not None and cat == TOKEN_EMBD and not named:
            new, why = opts.get("token_embedding_type"), "--token-embedding-type"
        elif opts.get("output_tensor_type") is not None and cat == OUTPUT:
            new, why = opts.get("output_tensor_type"), "--output-tensor-type"
        elif is_quantized(ft.default):
            chosen = True
            manual = next(((p, q) for p, q in opts.overrides if re.search(p, name)), None)  # the first match
            try:
                if manual is not None:
                    new, why = manual[1], f"--tensor-type {manual[0]}={manual[1].name.lower()}"
                elif not opts.get("pure"):
                    new, why = self.stock.choose(name, shape, new)
                    new, why = self.apply_policy(t, new, why, stock_site(name))
                else:
                    why = "--pure"
                new, fell, fb_why = shape_fallback(new, shape[0], self.fb_table)
                if fell:
                    why = f"{why}; {fb_why}" + (" (policy table)" if self.fb_table is not None and fb_why else "")
            except (NoFallback, ValueError) as e:
                self.out.fail(f"{name}: {e}")
                self.out.quantized(t, new, why, fell, chosen, failed=True)
                return
        needs = requires_imatrix(name, new, ft.name)
        if needs and not opts.has_imatrix and pol is not None and pol.missing_imatrix == "q8_0":
            new, why = T.Q8_0, f"{why}; no imatrix -> Q8_0 ({pol.source})"
            needs = False
        if needs and not opts.has_imatrix:
            self.out.fail(f"{name}: this quantization requires an imatrix ({new.name})", real_run_only=True)
        if new == t.type:
            self.out.same_type(t, why, fell, chosen)
            return
        if opts.has_imatrix:
            new, why = self.quantize_loop(self.origin[name], t, new, why)
        if new in ABORTS_WITHOUT_WEIGHTS and not requires_imatrix(name, new, ft.name) \
                and not _has_entry(opts, self.origin[name], shape):
            self.out.fail(f"{name}: ggml aborts quantizing {new.name} with no importance-matrix data for it "
                          "(GGML_ASSERT quant_weights; llama.cpp does not require it for this tensor)",
                          real_run_only=True)
        if shape[0] % block_size(new) != 0:
            self.out.fail(f"{name}: row length {shape[0]} is not a multiple of {block_size(new)} required by "
                          f"{new.name} (--token-embedding-type/--output-tensor-type get no shape check)",
                          real_run_only=True)
        self.out.quantized(t, new, why, fell, chosen)

    def quantize_loop(self, imatrix_name: str, t: TensorInfo, new: T, why: str) -> tuple[T, str]:
        """The main loop's imatrix lookup (real runs only): a missing or mismatched entry."""
        opts, pol, name, shape = self.opts, self.pol, t.name, t.shape
        assert opts.imatrix is not None
        n = opts.imatrix.get(imatrix_name)
        has_entry = False
        if n is not None:
            has_entry = n == entry_length(shape)
            ignore = pol is not None and pol.imatrix_mismatch == "ignore"
            if not has_entry and category(name) != TOKEN_EMBD and not ignore:
                self.out.fail(f"{name}: imatrix size {n} is different from tensor size {entry_length(shape)}",
                              real_run_only=True)
        if not has_entry and requires_imatrix(name, new, opts.ftype.name):
            if pol is not None and pol.missing_imatrix == "q8_0":
                return T.Q8_0, f"{why}; no imatrix entry -> Q8_0 ({pol.source})"
            self.out.fail(f"{name}: missing importance matrix for a very low-bit type ({new.name})",
                          real_run_only=True)
        return new, why


def _has_entry(opts: Options, imatrix_name: str, shape) -> bool:
    n = opts.imatrix.get(imatrix_name) if opts.imatrix else None
    return n is not None and n == entry_length(shape)


class Current(Family):
    name = "current"
    summary = ("llama.cpp 0c1e57098 (b11312): category-based mix, first --tensor-type match replaces it, "
               "--dry-run")
    options = OPTIONS
    export_formats = ("tensor-type", "tensor-type-file")

    def walk(self, model, policy, opts):
        return CurrentWalk(model, policy, opts)

    def override_result(self, stock, override):
        # the first matching pattern replaces the mix; the shape fallback still follows
        if not stock.chosen:
            return None
        new, _, _ = shape_fallback(override, stock.shape[0])
        return new

    def unreachable_reason(self, stock, wanted):
        return f"an override to {wanted.name} falls back on rows of {stock.shape[0]}"


FAMILY = Current()
