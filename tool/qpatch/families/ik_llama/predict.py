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

from qpatch.families.base import Family
from qpatch.families.ik_llama.stock import (
    FALLBACK,
    INTERLEAVED,
    VERY_LOW_BPW,
    NoFallback,
    State,
    StockModel,
    shape_fallback,
    uninterleaved,
)
from qpatch.gguf.catalogue import T, block_size, is_quantized, row_bytes
from qpatch.gguf.model_facts import ModelFacts, kind_of
from qpatch.policy.model import Policy
from qpatch.predict.evaluate import Ctx, Options, Plan, Positions, Status, TensorPlan, ggml_n_dims, policy_choice
from qpatch.predict.evaluate import why as explain

# the per-kind options of ik's llama-quantize: Options.kind_types key -> its flag
KIND_OPTIONS = {
    "attn_q_type": "--attn-q-type", "attn_k_type": "--attn-k-type", "attn_v_type": "--attn-v-type",
    "attn_qkv_type": "--attn-qkv-type", "attn_output_type": "--attn-output-type",
    "ffn_gate_type": "--ffn-gate-type", "ffn_down_type": "--ffn-down-type", "ffn_up_type": "--ffn-up-type",
    "ffn_gate_inp_type": "--ffn-gate-inp-type",
}
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
    if opts.leave_output_tensor and name == "output.weight":
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


def plan(model: ModelFacts, policy: Policy, opts: Options) -> Plan:
    result = Plan(model=model, policy=policy, pin="", options=opts)
    ft = opts.ftype
    if ft.name in NEEDS_IMATRIX and not opts.has_imatrix and not opts.ignore_imatrix_rules:
        result.errors.append(f"llama-quantize refuses {ft.name} without an importance matrix (pass --imatrix FILE)")
    model, refused = loaded(model)
    if refused:
        result.errors.append(refused)
    ordered = file_ordered(model)
    names = [t.name for t in ordered.tensors]
    kind_types = dict(opts.kind_types)
    if opts.output_tensor_type is not None:
        kind_types["output_tensor_type"] = opts.output_tensor_type
    if opts.token_embedding_type is not None:
        kind_types["token_embedding_type"] = opts.token_embedding_type
    st = State(n_attention_wv=sum(1 for n in names if "attn_v.weight" in n or "attn_qkv.weight" in n),
               has_output="output.weight" in names, has_imatrix=opts.has_imatrix, n_layer=model.n_layer)
    stock = StockModel(model, ft.name, st, kind_types)
    positions = Positions(ordered)
    targeted = not policy.archs or model.arch in policy.archs
    pol = policy if targeted else None
    fb_table = {**FALLBACK, **dict(policy.fallback)} if (pol is not None and policy.fallback is not None) else None
    gate_inp = kind_types.get("ffn_gate_inp_type")

    if st.n_attention_wv not in (0, model.n_layer, 3 * model.n_layer) and model.arch != "deci":
        result.errors.append(f"GGML_ASSERT n_attention_wv is unexpected: {st.n_attention_wv} attn_v/attn_qkv "
                             f"tensors for {model.n_layer} layers")

    for t in ordered.tensors:
        name, shape = t.name, t.shape
        if not is_quantizable(name, ggml_n_dims(shape), t.type, opts, gate_inp):
            why = "copy (COPY ftype)" if ft.copy else "not quantized (kept as is)"
            status = Status.COPIED if ft.copy else Status.KEPT
            result.tensors.append(TensorPlan(name, shape, t.type, t.type, why, status, _nbytes(t.type, shape)))
            continue
        new, why, fell, chosen = ft.default, "ftype default", False, False
        try:
            if opts.pure:
                why = "--pure"
                new, fell = shape_fallback(new, shape[0], fb_table)
            elif is_quantized(ft.default):
                chosen = True
                new, why = stock.choose(name, shape, new)
                x = Ctx(name, kind_of(name), shape, ordered, ft.name, opts.has_imatrix, new, ft.default, positions,
                        stock_site(name))
                picked, r = policy_choice(policy, x)
                if r is not None:
                    new, why = picked, explain(r, x)
                custom = next(((p, q) for p, q in opts.tensor_types if re.search(p, name)), None)
                if custom is not None:
                    new, why = custom[1], f"--custom-q {custom[0]}={custom[1].name.lower()}"
                new, fell = shape_fallback(new, shape[0], fb_table)
                if name == "token_embd.weight":
                    new = uninterleaved(new)
            if fell:
                why += "; shape fallback" + (" (policy table)" if fb_table is not None else "")
        except (NoFallback, ValueError) as e:
            result.errors.append(f"{name}: {e}")
            result.tensors.append(TensorPlan(name, shape, t.type, new, why,
                                             Status.QUANTIZED, _nbytes(t.type, shape), fell, chosen))
            continue
        for opt, exact in _EXACT_NAMES.items():
            if opt in kind_types and name == exact:
                new, why = kind_types[opt], f"--{opt.replace('_', '-')}"
        if gate_inp is not None and "ffn_gate_inp.weight" in name:
            new, why = gate_inp, "--ffn-gate-inp-type"
        if name == "token_embd.weight":
            new = uninterleaved(new)
        if new == t.type:
            result.tensors.append(TensorPlan(name, shape, t.type, t.type, why + " (already this type)",
                                             Status.SAME_TYPE,
                                             _nbytes(t.type, shape), fell, chosen))
            continue
        new, why = _quantize_loop(result, pol, opts, t, new, why)
        base, rows = INTERLEAVED.get(new, (new, 1))
        ne1 = shape[1] if len(shape) > 1 else 1
        if ne1 % rows != 0:
            new, why = base, f"{why}; {ne1} rows are not a multiple of {rows}: {base.name}"
        if shape[0] % block_size(new) != 0:  # ik writes it anyway: no run fails, but no ggml can read the rows
            result.warnings.append(f"{name}: row length {shape[0]} is not a multiple of {block_size(new)} required by "
                                   f"{new.name}: ik_llama.cpp writes it anyway (this type has no shape fallback), and "
                                   f"the file will not load")
        result.tensors.append(TensorPlan(name, shape, t.type, new, why,
                                         Status.QUANTIZED, _nbytes(new, shape), fell, chosen))
    return result


def _nbytes(t: T, shape: tuple[int, ...]) -> int:
    rows = 1
    for d in shape[1:]:
        rows *= d
    return rows * row_bytes(t, shape[0])


def _quantize_loop(result: Plan, pol: Policy | None, opts: Options, t, new: T, why: str) -> tuple[T, str]:
    """The main loop after type choice: imatrix lookup, the mismatch abort, the very-low-bit abort."""
    name, shape = t.name, t.shape
    has_entry = False
    if opts.imatrix:
        n = imatrix_entry(opts.imatrix, name)
        if n is not None:
            ne2 = shape[2] if len(shape) > 2 else 1
            if n == shape[0] * ne2:
                has_entry = True
            elif name != "token_embd.weight" and not (pol is not None and pol.imatrix_mismatch == "ignore"):
                result.errors.append(f"{name}: imatrix size {n} is different from tensor size {shape[0] * ne2}")
    if not has_entry:
        if pol is not None and pol.missing_imatrix == "q8_0" and needs_imatrix(name, new, opts):
            return T.Q8_0, f"{why}; no imatrix entry -> Q8_0 ({pol.source})"
        if not opts.ignore_imatrix_rules and needs_imatrix(name, new, opts):
            result.errors.append(f"{name}: missing importance matrix for a very low-bit type ({new.name})")
    return new, why


def needs_imatrix(name: str, new: T, opts: Options) -> bool:
    low = new in VERY_LOW_BPW or (new == T.Q2_K and opts.ftype.name == "Q2_K_S")
    return low and name not in ("token_embd.weight", "output.weight")


def parse_custom_q(spec: str, catalogue) -> list[tuple[str, T]]:
    """`--custom-q REGEX=TYPE,...` as ik's parse_custom_quants reads it: split on ',', the pattern kept
    as written (case-sensitive), the type matched exactly against ggml_type_name."""
    from qpatch.errors import UsageError

    out = []
    names = {catalogue.ggml_name(t): t for t in catalogue.types}
    for item in spec.split(","):
        if "=" not in item:
            raise UsageError(f"Invalid custom quantization input {spec}")
        pat, _, typ = item.partition("=")
        if typ not in names:
            raise UsageError(f"Invalid quantization type '{typ}' in custom quantization input {item}",
                             hint=f"ik_llama.cpp matches ggml type names exactly: {', '.join(sorted(names))}")
        try:
            re.compile(pat)
        except re.error as e:
            raise UsageError(f"--custom-q '{item}': bad regex: {e}") from None
        out.append((pat, names[typ]))
    return out


class IkLlama(Family):
    name = "ik_llama"
    project = "ik_llama.cpp"
    summary = ("ik_llama.cpp 55d3c05b (ik-llama-cpp-python 0.1.5): IQK/trellis/_R4 types, GGUF file order, "
               "first --custom-q match after stock's choice")
    tensor_type_match = "first"
    options = frozenset({"custom_q", "output_tensor_type", "token_embedding_type", "pure", "leave_output_tensor",
                         "kind_types", "ignore_imatrix_rules"})
    kind_options = tuple(KIND_OPTIONS)
    export_formats = ("custom-q",)
    imatrix_formats = ("legacy",)  # its llama-quantize reads no GGUF imatrix
    tensor_type_flag = "--custom-q"
    overrides_in_one_argument = True  # "REGEX=TYPE,REGEX=TYPE"
    exact_type_names = True
    # llama-quantize and llama-perplexity live under examples/. The IQK flash-attention CPU kernels are 6 files
    # of ~85 s of compile each on one core that neither quantizing nor perplexity without -fa runs: off
    # (patch 0002 makes that link); `qpatch build -D GGML_IQK_FLASH_ATTENTION=ON` brings them back.
    cmake_defines = (("LLAMA_BUILD_EXAMPLES", "ON"), ("GGML_IQK_FLASH_ATTENTION", "OFF"))

    def plan(self, model, policy, opts):
        return plan(model, policy, opts)

    def parse_tensor_types(self, specs, catalogue, flag=None):  # messages as the binary words them
        return tuple(o for spec in specs for o in parse_custom_q(spec, catalogue))

    def tensor_type_args(self, specs):
        # one --custom-q holds them all: a second --custom-q would append to the first (parse_custom_quants)
        return [self.tensor_type_flag, ",".join(specs)] if specs else []

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

    def dry_run_ok(self, plan):
        # ik's --dry-run runs the imatrix checks too; only quantizing a row that does not fit is left out
        return all(e in plan.real_run_only for e in plan.errors)


FAMILY = IkLlama()
