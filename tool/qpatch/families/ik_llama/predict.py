"""How ik_llama.cpp's llama-quantize decides every tensor's type, with a policy hooked in.

llama_model_quantize_internal, step by step (src/llama-quantize.cpp of pin ik-55d3c05b):
  pre-pass in GGUF file order (not sorted, unlike mainline): count attn_v/attn_qkv, note output.weight,
  let the policy observe each name -> per tensor, in file order: quantizable? -> --pure: shape fallback
  only | llama_tensor_get_type: stock's chain (counters advance) -> the policy (qpatch::choose) ->
  the first matching --custom-q regex -> the shape fallback (policy table first) -> token_embd loses
  row interleaving -> the option overrides (--token-embedding-type, --output-tensor-type,
  --ffn-gate-inp-type, ...) -> same as the source type: copied -> imatrix lookup (with its merged
  up/gate and MLA alternatives; dry runs do it too) -> the policy's answer to missing data ->
  very-low-bit without data aborts -> an interleaved type on rows not a multiple of its interleave
  becomes the plain type.
"""

from __future__ import annotations

import dataclasses
import re

from qpatch.families.base import Family, Walk
from qpatch.families.ik_llama.options import OPTIONS
from qpatch.families.ik_llama.stock import (
    FALLBACK,
    INTERLEAVED,
    VERY_LOW_BPW,
    NoFallback,
    StockModel,
    StockState,
    shape_fallback,
    uninterleaved,
)
from qpatch.gguf.catalogue import T, block_size, is_quantized
from qpatch.gguf.header import TensorInfo
from qpatch.gguf.imatrix import entry_length
from qpatch.gguf.model_facts import ModelFacts, ggml_n_dims
from qpatch.policy.model import Policy
from qpatch.predict.options import Options

# After type choice the main loop re-applies these options, comparing the *whole* name (strcmp): only a
# tensor literally named "attn_q.weight" etc. is reached, so for real models only the first two matter.
_EXACT_NAMES = {"token_embedding_type": "token_embd.weight", "output_tensor_type": "output.weight",
                "attn_q_type": "attn_q.weight", "attn_k_type": "attn_k.weight", "attn_v_type": "attn_v.weight",
                "attn_qkv_type": "attn_qkv.weight", "attn_output_type": "attn_output.weight",
                "ffn_gate_type": "ffn_gate", "ffn_down_type": "ffn_down", "ffn_up_type": "ffn_up"}
_NEVER = ("ssm_conv1d.weight", "ssm_x.weight", "ssm_dt.weight", "attn_rel_b.weight")


def stock_site(name: str) -> str:
    """Which branch of the general chain of llama_tensor_get_type a tensor reaches (Select(stock=...)).
    Substring tests, in the source's order: "attn_k" also catches attn_k_b and attn_kv_*, "attn_q"
    catches attn_q_a/attn_q_b and attn_qkv (whose own branch is never reached)."""
    if name == "output.weight":
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    for test, site in (("attn_v.weight", "attn_v"), ("attn_k", "attn_k"), ("attn_q", "attn_q"),
                       ("ffn_down", "ffn_down"), ("attn_output.weight", "attn_output"),
                       ("attn_qkv.weight", "attn_qkv"), ("ffn_gate", "ffn_gate"), ("ffn_up", "ffn_up")):
        if test in name:
            return site
    return "other"


def is_quantizable(name: str, ndims: int, src: T, opts: Options, gate_inp: T | None) -> bool:
    """The `quantize &= ...` chain of llama_model_quantize_internal."""
    if not name.endswith("weight") or ndims < 2 or "_norm.weight" in name:
        return False
    if opts.get("leave_output_tensor") and name == "output.weight":
        return False
    if opts.ftype.copy:
        return False
    if "ffn_gate_inp.weight" in name and (gate_inp is None or gate_inp == src):
        return False
    if name in ("position_embd.weight", "token_types.weight"):
        return False
    return not any(s in name for s in _NEVER)


def file_ordered(model: ModelFacts) -> ModelFacts:
    """The model with its tensors in GGUF file order: the order ik's loader keeps them in."""
    if not model.file_order:
        return model
    by = model.by_name
    return dataclasses.replace(model, tensors=tuple(by[n] for n in model.file_order))


def imatrix_entry(imatrix: dict[str, int], name: str) -> int | None:
    """The main loop's lookup: the name, else the merged up/gate and MLA (attn_v_b <-> attn_kv_b) names."""
    if name in imatrix:
        return imatrix[name]
    pos = name.find("ffn_up_exps.weight")
    pos = pos if pos >= 0 else name.find("ffn_gate_exps.weight")
    if pos >= 0:
        merged = name[:pos] + "ffn_gate_up_exps.weight"
        return imatrix[merged] if merged in imatrix else imatrix.get(name[:pos] + "ffn_up_exps.weight")
    if "ffn_gate_up_exps.weight" in name:
        pos = name.index("ffn_gate_up_exps.weight")
        return imatrix.get(name[:pos] + "ffn_up_exps.weight")
    for a, b in ((".attn_v_b.weight", ".attn_kv_b.weight"), (".attn_kv_b.weight", ".attn_v_b.weight")):
        if a in name:
            pos = name.index(a)
            return imatrix.get(name[:pos] + b)
    return None


# quantize.cpp's main() refuses these ftypes outright without imatrix data (unless --ignore-imatrix-rules)
NEEDS_IMATRIX = frozenset({"IQ2_XS", "IQ2_XXS", "IQ2_S", "IQ2_XXS_R4", "Q2_K_S", "IQ2_XS_R4", "IQ1_S", "IQ1_S_R4",
                           "IQ1_M_R4", "IQ1_M"})


def loaded(model: ModelFacts) -> tuple[ModelFacts, str | None]:
    """The hparams llm_load_hparams leaves: a DeepSeek GGUF converted for mainline's MLA (head_count_kv 1)
    is adjusted (every layer's n_head_kv becomes n_head / n_head_kv, so n_gqa is 1) when its head sizes are
    576/512 and its rope dimension 64, and aborts the load otherwise. (model, abort reason or None)"""
    if model.arch not in ("deepseek2", "mistral4") or model.n_head_kv != 1:
        return model, None
    k, v = (576, 512) if model.arch == "deepseek2" else (320, 256)
    gqa = model.n_gqa
    if gqa % 4 != 0 or model.n_embd_head_k != k or model.n_embd_head_v != v or model.n_rot != 64:
        return model, (f"ik_llama.cpp refuses this {model.arch} model (head_count_kv 1 needs key/value head sizes "
                       f"{k}/{v} and rope dimension 64, n_head a multiple of 4; it has {model.n_embd_head_k}/"
                       f"{model.n_embd_head_v}, {model.n_rot}, {model.n_head}): 'Detected incompatible DeepSeek model'")
    return dataclasses.replace(model, n_head_kv=gqa, n_head_kv_layers=(gqa,) * len(model.n_head_kv_layers)), None


class IkWalk(Walk):
    """llama_model_quantize_internal over one job, in GGUF file order."""

    def __init__(self, model: ModelFacts, policy: Policy, opts: Options):
        loaded_model, refused = loaded(model)
        ordered = file_ordered(loaded_model)
        super().__init__(ordered, policy, opts)
        ft = opts.ftype
        if ft.name in NEEDS_IMATRIX and not opts.has_imatrix and not opts.get("ignore_imatrix_rules"):
            self.out.fail(f"llama-quantize refuses {ft.name} without an importance matrix (pass --imatrix FILE)")
        if refused:
            self.out.fail(refused)
        names = [t.name for t in ordered.tensors]
        kind_types = dict(opts.get("kind_types", ()))
        for option in ("output_tensor_type", "token_embedding_type"):
            if opts.get(option) is not None:
                kind_types[option] = opts.get(option)
        self.kind_types = kind_types
        st = StockState(n_attention_wv=sum(1 for n in names if "attn_v.weight" in n or "attn_qkv.weight" in n),
                        has_output="output.weight" in names, has_imatrix=opts.has_imatrix,
                        n_layer=loaded_model.n_layer)
        self.stock = StockModel(loaded_model, ft.name, st, kind_types)
        self.pol = policy if (not policy.archs or model.arch in policy.archs) else None  # targeted
        self.fb_table = ({**FALLBACK, **dict(policy.fallback)} if (self.pol is not None and policy.fallback is not None)
                         else None)
        self.gate_inp = kind_types.get("ffn_gate_inp_type")
        if st.n_attention_wv not in (0, model.n_layer, 3 * model.n_layer) and model.arch != "deci":
            self.out.fail(f"GGML_ASSERT n_attention_wv is unexpected: {st.n_attention_wv} attn_v/attn_qkv "
                          f"tensors for {model.n_layer} layers")

    def decide(self, t: TensorInfo) -> None:
        opts, ft, name, shape, fb_table = self.opts, self.opts.ftype, t.name, t.shape, self.fb_table
        if not is_quantizable(name, ggml_n_dims(shape), t.type, opts, self.gate_inp):
            self.out.kept(t, ft.copy)
            return
        new, why, fell, chosen = ft.default, "ftype default", False, False
        try:
            if opts.get("pure"):
                why = "--pure"
                new, fell = shape_fallback(new, shape[0], fb_table)
            elif is_quantized(ft.default):
                chosen = True
                new, why = self.stock.choose(name, shape, new)
                new, why = self.apply_policy(t, new, why, stock_site(name))
                custom = next(((p, q) for p, q in opts.overrides if re.search(p, name)), None)
                if custom is not None:
                    new, why = custom[1], f"--custom-q {custom[0]}={custom[1].name.lower()}"
                new, fell = shape_fallback(new, shape[0], fb_table)
                if name == "token_embd.weight":
                    new = uninterleaved(new)
            if fell:
                why += "; shape fallback" + (" (policy table)" if fb_table is not None else "")
        except (NoFallback, ValueError) as e:
            self.out.fail(f"{name}: {e}")
            self.out.quantized(t, new, why, fell, chosen, failed=True)
            return
        for opt, exact in _EXACT_NAMES.items():
            if opt in self.kind_types and name == exact:
                new, why = self.kind_types[opt], f"--{opt.replace('_', '-')}"
        if self.gate_inp is not None and "ffn_gate_inp.weight" in name:
            new, why = self.gate_inp, "--ffn-gate-inp-type"
        if name == "token_embd.weight":
            new = uninterleaved(new)
        if new == t.type:
            self.out.same_type(t, why, fell, chosen)
            return
        new, why = self.quantize_loop(t, new, why)
        base, rows = INTERLEAVED.get(new, (new, 1))
        ne1 = shape[1] if len(shape) > 1 else 1
        if ne1 % rows != 0:
            new, why = base, f"{why}; {ne1} rows are not a multiple of {rows}: {base.name}"
        if shape[0] % block_size(new) != 0:  # ik writes it anyway: no run fails, but no ggml can read the rows
            self.out.warnings.append(f"{name}: row length {shape[0]} is not a multiple of {block_size(new)} "
                                     f"required by {new.name}: ik_llama.cpp writes it anyway (this type has no "
                                     f"shape fallback), and the file will not load")
        self.out.quantized(t, new, why, fell, chosen)

    def quantize_loop(self, t: TensorInfo, new: T, why: str) -> tuple[T, str]:
        """The main loop after type choice: imatrix lookup, the mismatch abort, the very-low-bit abort."""
        opts, pol, name, shape = self.opts, self.pol, t.name, t.shape
        has_entry = False
        if opts.imatrix:
            n = imatrix_entry(opts.imatrix, name)
            if n is not None:
                has_entry = n == entry_length(shape)
                ignore = pol is not None and pol.imatrix_mismatch == "ignore"
                if not has_entry and name != "token_embd.weight" and not ignore:
                    self.out.fail(f"{name}: imatrix size {n} is different from tensor size {entry_length(shape)}")
        if not has_entry:
            if pol is not None and pol.missing_imatrix == "q8_0" and needs_imatrix(name, new, opts):
                return T.Q8_0, f"{why}; no imatrix entry -> Q8_0 ({pol.source})"
            if not opts.get("ignore_imatrix_rules") and needs_imatrix(name, new, opts):
                self.out.fail(f"{name}: missing importance matrix for a very low-bit type ({new.name})")
        return new, why


def needs_imatrix(name: str, new: T, opts: Options) -> bool:
    low = new in VERY_LOW_BPW or (new == T.Q2_K and opts.ftype.name == "Q2_K_S")
    return low and name not in ("token_embd.weight", "output.weight")


class IkLlama(Family):
    name = "ik_llama"
    project = "ik_llama.cpp"
    summary = ("ik_llama.cpp 55d3c05b (ik-llama-cpp-python 0.1.5): IQK/trellis/_R4 types, GGUF file order, "
               "first --custom-q match after stock's choice")
    options = OPTIONS
    export_formats = ("custom-q",)
    imatrix_formats = ("legacy",)  # its llama-quantize reads no GGUF imatrix
    # llama-quantize and llama-perplexity live under examples/. The IQK flash-attention CPU kernels are 6 files
    # of ~85 s of compile each on one core that neither quantizing nor perplexity without -fa runs: off
    # (patch 0002 makes that link); `qpatch build -D GGML_IQK_FLASH_ATTENTION=ON` brings them back.
    cmake_defines = (("LLAMA_BUILD_EXAMPLES", "ON"), ("GGML_IQK_FLASH_ATTENTION", "OFF"))

    def walk(self, model, policy, opts):
        return IkWalk(model, policy, opts)

    def override_result(self, stock, override):
        # --custom-q replaces the choice of every tensor that reaches llama_tensor_get_type; the shape
        # fallback and token_embd's de-interleaving follow, then the main loop's row-interleave check
        if not stock.chosen:
            return None
        new, _ = shape_fallback(override, stock.shape[0])
        if stock.name == "token_embd.weight":
            new = uninterleaved(new)
        base, rows = INTERLEAVED.get(new, (new, 1))
        ne1 = stock.shape[1] if len(stock.shape) > 1 else 1
        return base if ne1 % rows else new

    def unreachable_reason(self, stock, wanted):
        return f"an override to {wanted.name} falls back on rows of {stock.shape[0]}"


FAMILY = IkLlama()
