"""Predict the ggml type of every tensor, exactly as the (patched) llama-quantize will.

Per tensor, in llama.cpp's processing order:
  quantized at all? -> ftype default -> stock choice -> policy rule -> shape fallback
  -> --tensor-type (skipped after a fallback) -> --token-embedding-type / --output-tensor-type
  -> quantize-loop behaviour (missing imatrix entry, imatrix length mismatch).
Each tensor's result names the rule that decided it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .gguf_constants import GGMLQuantizationType as T

from . import catalogue
from .catalogue import Ftype, block_size, is_quantized, tensor_bytes
from .errors import QuantizeError, UsageError
from .model_facts import ModelFacts, block_of, kind_of
from .policy.model import (
    AllOf, AnyOf, After, Arch, AtLeast, Before, Block, ByFtype, Default, Experts, Ftypes, Gqa, Imatrix, Keep,
    Not, Ordinal, Policy, RowMultiple, Rule, Set, Stacked, Step, UseMoreBits,
)
from .stock.b6700 import FALLBACK, StockModel, StockState, fallback, use_more_bits

# Tensor types the quantize loop refuses without an imatrix entry (llama_model_quantize_impl).
_NEEDS_IMATRIX = frozenset({T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_S})


@dataclass(frozen=True)
class Options:
    """llama-quantize's options that change type choice."""

    ftype: Ftype
    imatrix: dict[str, int] | None = None  # entry name -> length; None: no --imatrix
    output_tensor_type: T | None = None
    token_embedding_type: T | None = None
    tensor_types: tuple[tuple[str, T], ...] = ()  # (lowercased pattern, type), in order
    pure: bool = False
    leave_output_tensor: bool = False

    @property
    def has_imatrix(self) -> bool:
        return bool(self.imatrix)


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    src_type: T
    type: T
    rule: str
    quantized: bool
    nbytes: int
    fell_back: bool = False  # the shape fallback replaced the chosen type (so --tensor-type was skipped)


@dataclass
class Plan:
    model: ModelFacts
    policy: Policy
    pin: str
    options: Options
    tensors: list[TensorPlan] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what would make llama-quantize abort

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def n_elements(self) -> int:
        total = 0
        for t in self.tensors:
            n = 1
            for d in t.shape:
                n *= d
            total += n
        return total

    @property
    def bpw(self) -> float:
        n = self.n_elements
        return 8.0 * self.total_bytes / n if n else 0.0

    def types(self) -> dict[str, str]:
        return {t.name: t.type.name for t in self.tensors}


def parse_tensor_type(spec: str) -> tuple[str, T]:
    """`PATTERN=TYPE` as llama-quantize parses it: the pattern is lowercased."""
    if "=" not in spec:
        raise UsageError(f"malformed --tensor-type '{spec}' (expected PATTERN=TYPE)")
    pat, _, typ = spec.partition("=")
    if not pat:
        raise UsageError(f"--tensor-type '{spec}': missing tensor name")
    if not typ:
        raise UsageError(f"--tensor-type '{spec}': missing quantization type")
    pat = pat.lower()
    try:
        re.compile(pat)
    except re.error as e:
        raise UsageError(f"--tensor-type '{spec}': bad regex: {e}") from None
    return pat, catalogue.parse_type(typ, what="type in --tensor-type")


def ggml_n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: trailing dimensions of size 1 do not count, so ne (4096, 1) is 1-D."""
    n = len(shape)
    while n > 1 and shape[n - 1] == 1:
        n -= 1
    return max(n, 1)


def is_quantizable(name: str, ndims: int, opts: Options) -> bool:
    """The `quantize &= ...` chain of llama_model_quantize_impl; `ndims` as ggml_n_dims counts them."""
    if not name.endswith("weight") or ndims < 2:
        return False
    if "_norm.weight" in name:
        return False
    if opts.leave_output_tensor and name == "output.weight":
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


# ------------------------------------------------------------------ policy evaluation


class Positions:
    """Ordinals of every tensor in every frame a policy uses (precomputed, like the C++ pre-pass)."""

    def __init__(self, model: ModelFacts):
        self.model = model
        self.names = [t.name for t in model.tensors]
        self.kinds = [kind_of(n) for n in self.names]
        self.index = {n: i for i, n in enumerate(self.names)}
        self._own: list[int] | None = None
        self._own_count: dict[str, int] = {}
        self._groups: dict[tuple[str, ...], tuple[dict[str, int], int]] = {}

    def _own_ordinals(self):
        if self._own is None:
            counts: dict[str, int] = {}
            own = []
            for k in self.kinds:
                own.append(counts.get(k, 0))
                counts[k] = counts.get(k, 0) + 1
            self._own, self._own_count = own, counts
        return self._own, self._own_count

    def position(self, frame, name: str) -> tuple[int, int] | None:
        if isinstance(frame, Block):
            i = block_of(name)
            return None if i < 0 else (i, self.model.n_layer)
        idx = self.index[name]
        kind = self.kinds[idx]
        if frame.kinds is None:
            own, counts = self._own_ordinals()
            k, n = own[idx], counts[kind]
        else:
            if kind not in frame.kinds:
                return None
            if frame.kinds not in self._groups:
                ords, c = {}, 0
                for nm, kd in zip(self.names, self.kinds):
                    if kd in frame.kinds:
                        ords[nm] = c
                        c += 1
                self._groups[frame.kinds] = (ords, c)
            ords, n = self._groups[frame.kinds]
            k = ords[name]
        if frame.n == "blocks":
            n = self.model.n_layer
        return k, n


def _cdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


_OPS = {"==": int.__eq__, "!=": int.__ne__, ">=": int.__ge__, ">": int.__gt__, "<=": int.__le__, "<": int.__lt__}


@dataclass
class Ctx:
    name: str
    kind: str
    shape: tuple[int, ...]
    model: ModelFacts
    ftype: str
    has_imatrix: bool
    stock: T
    default: T
    pos: Positions


def eval_cond(c, x: Ctx) -> bool:
    if isinstance(c, (Before, AtLeast, After, UseMoreBits)):
        p = x.pos.position(c.frame, x.name)
        if p is None:
            return False
        k, n = p
        if isinstance(c, UseMoreBits):
            return use_more_bits(k, n)
        bound = _cdiv(c.num * n, c.den)
        return k < bound if isinstance(c, Before) else k >= bound if isinstance(c, AtLeast) else k > bound
    if isinstance(c, Experts):
        return _OPS[c.op](x.model.n_expert, c.value)
    if isinstance(c, Gqa):
        return _OPS[c.op](x.model.n_gqa, c.value)
    if isinstance(c, Imatrix):
        return x.has_imatrix == c.present
    if isinstance(c, Ftypes):
        return x.ftype in c.names
    if isinstance(c, Arch):
        return x.model.arch in c.names
    if isinstance(c, RowMultiple):
        return x.shape[0] % c.n == 0
    if isinstance(c, Stacked):
        return len(x.shape) > 2 and x.shape[2] > 1
    if isinstance(c, Not):
        return not eval_cond(c.cond, x)
    if isinstance(c, AnyOf):
        return any(eval_cond(d, x) for d in c.conds)
    if isinstance(c, AllOf):
        return all(eval_cond(d, x) for d in c.conds)
    raise TypeError(f"no Python meaning for condition {c!r}")


def eval_action(a, x: Ctx) -> T:
    if isinstance(a, Set):
        return a.type
    if isinstance(a, ByFtype):
        for f, t in a.table:
            if f == x.ftype:
                return t
        return a.otherwise if a.otherwise is not None else x.stock
    if isinstance(a, Step):
        if x.stock not in a.ladder:
            return x.stock
        i = a.ladder.index(x.stock) + a.by
        return a.ladder[max(0, min(len(a.ladder) - 1, i))]
    if isinstance(a, Default):
        return x.default
    if isinstance(a, Keep):
        return x.stock
    raise TypeError(f"no Python meaning for action {a!r}")


def selects(r: Rule, x: Ctx) -> bool:
    s = r.select
    if s.kinds:
        return x.kind in s.kinds
    if s.contains:
        return s.contains in x.name
    return re.search(s.pattern, x.name) is not None


def policy_choice(policy: Policy, x: Ctx) -> tuple[T, Rule | None]:
    if policy.archs and x.model.arch not in policy.archs:
        return x.stock, None
    for r in policy.rules:
        if selects(r, x) and all(eval_cond(c, x) for c in r.when):
            return eval_action(r.then, x), r
    return x.stock, None


# --------------------------------------------------------------------------- the plan


def plan(model: ModelFacts, policy: Policy, opts: Options, pin: str = "4227c9be") -> Plan:
    """Predict every tensor's type. Conditions under which llama-quantize aborts go to `errors`."""
    result = Plan(model=model, policy=policy, pin=pin, options=opts)
    ft = opts.ftype
    names = [t.name for t in model.tensors]
    state = StockState.for_model(model, names, opts.has_imatrix)
    stock = StockModel(model, ft.name, state, opts.output_tensor_type, opts.token_embedding_type)
    positions = Positions(model)
    targeted = not policy.archs or model.arch in policy.archs
    # a policy's fallback entries override stock's; types it does not list keep stock's fallback
    fb_table = {**FALLBACK, **dict(policy.fallback)} if (policy.fallback is not None and targeted) else None

    if ft.name in catalogue.NEEDS_IMATRIX and not opts.has_imatrix:
        result.errors.append(
            f"llama-quantize refuses {ft.name} without an importance matrix (pass --imatrix FILE)")
    n_attn_layer = sum(1 for h in model.n_head_kv_layers[:model.n_layer] if h != 0)
    if model.arch in ("t5", "t5encoder"):  # llama_model_has_encoder: encoder, decoder and cross attention
        n_attn_layer *= 3
    if state.n_attention_wv not in (0, n_attn_layer):
        result.errors.append(f"GGML_ASSERT n_attention_wv is unexpected: {state.n_attention_wv} attn_v/attn_qkv/"
                             f"attn_kv_b tensors for {n_attn_layer} attention layers")

    for t in model.tensors:
        name, shape = t.name, t.shape
        if not is_quantizable(name, ggml_n_dims(shape), opts):
            why = "copy (COPY ftype)" if ft.copy else "not quantized (kept as is)"
            result.tensors.append(TensorPlan(name, shape, t.type, t.type, why, False, tensor_bytes(t.type, shape)))
            continue
        new, why, fell = ft.default, "ftype default", False
        if opts.pure:
            why = "--pure"
        elif is_quantized(ft.default):
            new, why = stock.choose(name, shape, ft.default)
            x = Ctx(name, kind_of(name), shape, model, ft.name, opts.has_imatrix, new, ft.default, positions)
            chosen, r = policy_choice(policy, x)
            if r is not None:
                new, why = chosen, r.source
            try:
                new, fell, fb_why = fallback(new, shape[0], fb_table)
            except ValueError as e:
                result.errors.append(f"{name}: {e}")
                fell, fb_why = False, ""
            if fell:
                why = f"{why}; {fb_why}" + (" (policy table)" if fb_table is not None else "")
            if opts.tensor_types and not fell:
                for pat, typ in opts.tensor_types:
                    if re.search(pat, name):
                        new, why = typ, f"--tensor-type {pat}={typ.name.lower()}"
        if opts.token_embedding_type is not None and name == "token_embd.weight":
            new, why = opts.token_embedding_type, "--token-embedding-type"
        if opts.output_tensor_type is not None and name == "output.weight":
            new, why = opts.output_tensor_type, "--output-tensor-type"
        if new == t.type:
            result.tensors.append(TensorPlan(name, shape, t.type, t.type, why + " (already this type)", False,
                                             tensor_bytes(t.type, shape), fell))
            continue
        new, why = _quantize_loop(result, policy if targeted else None, opts, name, shape, new, why)
        if shape[0] % block_size(new) != 0:
            result.errors.append(f"{name}: row length {shape[0]} is not a multiple of {block_size(new)} "
                                 f"required by {new.name} (overrides get no shape check)")
        result.tensors.append(TensorPlan(name, shape, t.type, new, why, True, tensor_bytes(new, shape), fell))
    return result


def _quantize_loop(result: Plan, policy: Policy | None, opts: Options, name, shape, new: T, why: str):
    """What llama_model_quantize_impl does after type choice: imatrix lookup and the low-bit check."""
    has_entry = False
    if opts.imatrix:
        n = opts.imatrix.get(name)
        if n is not None:
            ne2 = shape[2] if len(shape) > 2 else 1
            if n == shape[0] * ne2:
                has_entry = True
            elif name != "token_embd.weight":
                if policy is None or policy.imatrix_mismatch == "abort":
                    result.errors.append(f"{name}: imatrix size {n} is different from tensor size {shape[0] * ne2}")
    if not has_entry:
        needs = new in _NEEDS_IMATRIX or (
            new == T.IQ1_M and name not in ("token_embd.weight", "output.weight")) or (
            new == T.Q2_K and opts.ftype.name == "Q2_K_S" and name != "token_embd.weight")
        if needs:
            if policy is not None and policy.missing_imatrix == "q8_0":
                return T.Q8_0, f"{why}; no imatrix entry -> Q8_0 ({policy.source})"
            result.errors.append(f"{name}: missing importance matrix for a very low-bit type ({new.name})")
    return new, why

