"""Library entry points behind the CLI commands (the CLI only parses arguments and calls these)."""

from __future__ import annotations

from pathlib import Path

from .errors import QuantizeError, UsageError
from .evaluate import Options, Plan, parse_prune_layers, plan
from .imatrix import read_imatrix
from .model_facts import read_model
from .pins import DEFAULT_PIN, family_of  # noqa: F401  (family_of: for callers)
from .policy import loader
from .policy.model import Policy


def read_tensor_type_file(path) -> list[str]:
    """`--tensor-type-file`: PATTERN=TYPE entries separated by spaces or newlines (as `file >> arg`)."""
    try:
        return Path(path).read_text().split()
    except OSError as e:
        raise UsageError(f"--tensor-type-file {path}: {e.strerror}") from None


def make_options(pin: str, ftype: str, *, imatrix=None, output_tensor_type=None, token_embedding_type=None,
                 tensor_types=(), tensor_type_file=None, pure=False, leave_output_tensor=False,
                 prune_layers=None, kind_types=(), ignore_imatrix_rules=False, custom_q=()) -> Options:
    """llama-quantize's type options as the pin's family reads them; options it lacks are refused."""
    fam = family_of(pin)
    cat = fam.catalogue
    given = {"output_tensor_type": output_tensor_type, "token_embedding_type": token_embedding_type,
             "tensor_type": list(tensor_types) or tensor_type_file, "pure": pure,
             "leave_output_tensor": leave_output_tensor, "prune_layers": prune_layers, "kind_types": kind_types,
             "ignore_imatrix_rules": ignore_imatrix_rules, "custom_q": list(custom_q)}
    for opt, value in given.items():
        if value and opt not in fam.options:
            raise UsageError(f"--{opt.replace('_', '-')} is not an option of pin {pin}'s llama-quantize "
                             f"(family {fam.name})")
    specs = (list(tensor_types) + (read_tensor_type_file(tensor_type_file) if tensor_type_file else [])
             + list(custom_q))
    return Options(
        ftype=cat.parse_ftype(ftype),
        imatrix=read_imatrix(imatrix) if imatrix else None,
        output_tensor_type=cat.parse_type(output_tensor_type, what="--output-tensor-type") if output_tensor_type else None,
        token_embedding_type=(cat.parse_type(token_embedding_type, what="--token-embedding-type")
                              if token_embedding_type else None),
        tensor_types=fam.parse_tensor_types(specs, cat),
        pure=pure,
        leave_output_tensor=leave_output_tensor,
        prune_layers=parse_prune_layers(prune_layers) if prune_layers else (),
        kind_types=parse_kind_types(kind_types, fam, cat),
        ignore_imatrix_rules=ignore_imatrix_rules,
    )


def parse_kind_types(given, fam, cat) -> tuple:
    """ik_llama.cpp's per-kind options (`attn-v-type=q8_0`, or a dict attn_v_type -> q8_0), checked."""
    items = list(given.items()) if isinstance(given, dict) else [s.partition("=")[::2] for s in given]
    out = []
    for key, value in items:
        key = key.strip().lstrip("-").replace("-", "_")
        if key not in fam.kind_options:
            known = ", ".join(k.replace("_", "-") for k in fam.kind_options) or "none"
            raise UsageError(f"--kind-type {key.replace('_', '-')}: not a per-kind option of family {fam.name}",
                             hint=f"options: {known}")
        out.append((key, cat.parse_type(value, what=f"--{key.replace('_', '-')}")))
    return tuple(out)


def make_plan(model_path, ftype: str, *, policy: "str | Policy" = "stock", pin: str = DEFAULT_PIN,
              **options) -> Plan:
    opts = make_options(pin, ftype, **options)
    pol = policy if isinstance(policy, Policy) else loader.load(policy)
    return plan(read_model(model_path), pol, opts, pin=pin)


def require_runnable(p: Plan):
    """Raise when llama-quantize would refuse or abort this job."""
    if p.errors:
        more = f" (and {len(p.errors) - 1} more)" if len(p.errors) > 1 else ""
        raise QuantizeError(f"llama-quantize would fail: {p.errors[0]}{more}")
