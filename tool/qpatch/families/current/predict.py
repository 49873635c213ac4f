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

from qpatch.families.base import Family
from qpatch.families.current.stock import (
    ABORTS_WITHOUT_WEIGHTS,
    OUTPUT,
    TOKEN_EMBD,
    NoFallback,
    StockModel,
    StockState,
    category,
    fallback,
    requires_imatrix,
    stock_site,
)
from qpatch.gguf.catalogue import T, block_size, is_quantized, tensor_bytes
from qpatch.gguf.model_facts import ModelFacts, kind_of
from qpatch.policy.model import Policy
from qpatch.predict.evaluate import Ctx, Options, Plan, Positions, Status, TensorPlan, ggml_n_dims, policy_choice
from qpatch.predict.evaluate import why as explain

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


def allows_quantization(name: str, ndims: int, arch: str, opts: Options) -> bool:
    """tensor_allows_quantization; `ndims` as ggml_n_dims counts them."""
    if opts.ftype.copy or ndims < 2:
        return False
    if not name.endswith("weight") or "_norm.weight" in name:
        return False
    if opts.leave_output_tensor and name == "output.weight":
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


def plan(model: ModelFacts, policy: Policy, opts: Options) -> Plan:
    result = Plan(model=model, policy=policy, pin="", options=opts)
    ft = opts.ftype
    pruned, origin = prune(model, opts.prune_layers)
    names = [t.name for t in pruned.tensors]
    state = StockState.for_tensors(model, names, opts.has_imatrix)
    stock = StockModel(model, ft.name, state, opts.output_tensor_type)
    positions = Positions(pruned)
    targeted = not policy.archs or model.arch in policy.archs
    pol = policy if targeted else None
    fb_table = dict(policy.fallback) if (pol is not None and policy.fallback is not None) else None

    def fail(msg: str, *, real_run_only: bool = False):
        result.errors.append(msg)
        if real_run_only:
            result.real_run_only.append(msg)

    for t in pruned.tensors:
        name, shape = t.name, t.shape
        if not allows_quantization(name, ggml_n_dims(shape), model.arch, opts):
            why = "copy (COPY ftype)" if ft.copy else "not quantized (kept as is)"
            status = Status.COPIED if ft.copy else Status.KEPT
            result.tensors.append(TensorPlan(name, shape, t.type, t.type, why, status, tensor_bytes(t.type, shape)))
            continue
        cat = category(name)
        new, why, fell, chosen = ft.default, "ftype default", False, False
        named = name == "per_layer_token_embd.weight" and any(re.search(p, name) for p, _ in opts.tensor_types)
        if opts.token_embedding_type is not None and cat == TOKEN_EMBD and not named:
            new, why = opts.token_embedding_type, "--token-embedding-type"
        elif opts.output_tensor_type is not None and cat == OUTPUT:
            new, why = opts.output_tensor_type, "--output-tensor-type"
        elif is_quantized(ft.default):
            chosen = True
            manual = next(((p, q) for p, q in opts.tensor_types if re.search(p, name)), None)  # the first match
            try:
                if manual is not None:
                    new, why = manual[1], f"--tensor-type {manual[0]}={manual[1].name.lower()}"
                elif not opts.pure:
                    new, why = stock.mix(name, shape, new, cat)
                    x = Ctx(name, kind_of(name), shape, model, ft.name, opts.has_imatrix, new, ft.default, positions,
                            stock_site(name))
                    picked, r = policy_choice(policy, x)
                    if r is not None:
                        new, why = picked, explain(r, x)
                else:
                    why = "--pure"
                new, fell, fb_why = fallback(new, shape[0], fb_table)
                if fell:
                    why = f"{why}; {fb_why}" + (" (policy table)" if fb_table is not None and fb_why else "")
            except (NoFallback, ValueError) as e:
                fail(f"{name}: {e}")
                result.tensors.append(TensorPlan(name, shape, t.type, new, why,
                                                 Status.QUANTIZED, tensor_bytes(t.type, shape),
                                                 fell, chosen))
                continue
        needs = requires_imatrix(name, new, ft.name)
        if needs and not opts.has_imatrix and pol is not None and pol.missing_imatrix == "q8_0":
            new, why = T.Q8_0, f"{why}; no imatrix -> Q8_0 ({pol.source})"
            needs = False
        if needs and not opts.has_imatrix:
            fail(f"{name}: this quantization requires an imatrix ({new.name})", real_run_only=True)
        if new == t.type:
            result.tensors.append(TensorPlan(name, shape, t.type, t.type, why + " (already this type)",
                                             Status.SAME_TYPE,
                                             tensor_bytes(t.type, shape), fell, chosen))
            continue
        if opts.has_imatrix:
            new, why = _imatrix_lookup(result, fail, pol, opts, origin[name], t, new, why)
        if new in ABORTS_WITHOUT_WEIGHTS and not requires_imatrix(name, new, ft.name) \
                and not _has_entry(opts, origin[name], shape):
            fail(f"{name}: ggml aborts quantizing {new.name} with no importance-matrix data for it "
                 "(GGML_ASSERT quant_weights; llama.cpp does not require it for this tensor)", real_run_only=True)
        if shape[0] % block_size(new) != 0:
            fail(f"{name}: row length {shape[0]} is not a multiple of {block_size(new)} required by {new.name} "
                 f"(--token-embedding-type/--output-tensor-type get no shape check)", real_run_only=True)
        result.tensors.append(TensorPlan(name, shape, t.type, new, why,
                                         Status.QUANTIZED, tensor_bytes(new, shape), fell, chosen))
    return result


def _has_entry(opts: Options, imatrix_name: str, shape) -> bool:
    n = opts.imatrix.get(imatrix_name) if opts.imatrix else None
    return n is not None and n == shape[0] * (shape[2] if len(shape) > 2 else 1)


def _imatrix_lookup(result, fail, pol, opts, imatrix_name, t, new: T, why: str):
    """The main loop's imatrix lookup (real runs only): a missing or mismatched entry."""
    name, shape = t.name, t.shape
    n = opts.imatrix.get(imatrix_name)
    has_entry = False
    if n is not None:
        ne2 = shape[2] if len(shape) > 2 else 1
        if n == shape[0] * ne2:
            has_entry = True
        elif category(name) != TOKEN_EMBD and not (pol is not None and pol.imatrix_mismatch == "ignore"):
            fail(f"{name}: imatrix size {n} is different from tensor size {shape[0] * ne2}", real_run_only=True)
    if not has_entry and requires_imatrix(name, new, opts.ftype.name):
        if pol is not None and pol.missing_imatrix == "q8_0":
            return T.Q8_0, f"{why}; no imatrix entry -> Q8_0 ({pol.source})"
        fail(f"{name}: missing importance matrix for a very low-bit type ({new.name})", real_run_only=True)
    return new, why


class Current(Family):
    name = "current"
    summary = ("llama.cpp 0c1e57098 (b11312): category-based mix, first --tensor-type match replaces it, "
               "--dry-run")
    tensor_type_match = "first"
    options = frozenset({"tensor_type", "output_tensor_type", "token_embedding_type", "pure",
                         "leave_output_tensor", "prune_layers"})
    export_formats = ("tensor-type", "tensor-type-file")

    def plan(self, model, policy, opts):
        return plan(model, policy, opts)

    def override_result(self, stock, override):
        # the first matching pattern replaces the mix; the shape fallback still follows
        if not stock.chosen:
            return None
        new, _, _ = fallback(override, stock.shape[0])
        return new

    def unreachable_reason(self, stock, wanted):
        return f"an override to {wanted.name} falls back on rows of {stock.shape[0]}"

    def dry_run_ok(self, plan):
        return all(e in plan.real_run_only for e in plan.errors)


FAMILY = Current()
