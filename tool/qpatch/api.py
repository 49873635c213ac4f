"""Library entry points behind the CLI commands (the CLI only parses arguments and calls these)."""

from __future__ import annotations

from pathlib import Path

from .errors import QuantizeError, UsageError
from .evaluate import Options, Plan, parse_prune_layers, parse_tensor_type, plan
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
                 prune_layers=None) -> Options:
    """llama-quantize's type options as the pin's family reads them; options it lacks are refused."""
    fam = family_of(pin)
    cat = fam.catalogue
    given = {"output_tensor_type": output_tensor_type, "token_embedding_type": token_embedding_type,
             "tensor_type": list(tensor_types) or tensor_type_file, "pure": pure,
             "leave_output_tensor": leave_output_tensor, "prune_layers": prune_layers}
    for opt, value in given.items():
        if value and opt not in fam.options:
            raise UsageError(f"--{opt.replace('_', '-')} is not an option of pin {pin}'s llama-quantize "
                             f"(family {fam.name})")
    specs = list(tensor_types) + (read_tensor_type_file(tensor_type_file) if tensor_type_file else [])
    return Options(
        ftype=cat.parse_ftype(ftype),
        imatrix=read_imatrix(imatrix) if imatrix else None,
        output_tensor_type=cat.parse_type(output_tensor_type, what="--output-tensor-type") if output_tensor_type else None,
        token_embedding_type=(cat.parse_type(token_embedding_type, what="--token-embedding-type")
                              if token_embedding_type else None),
        tensor_types=tuple(parse_tensor_type(s, cat) for s in specs),
        pure=pure,
        leave_output_tensor=leave_output_tensor,
        prune_layers=parse_prune_layers(prune_layers) if prune_layers else (),
    )


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
