"""Library entry points behind the CLI commands (the CLI only parses arguments and calls these)."""

from __future__ import annotations

from .catalogue import parse_ftype, parse_type
from .errors import QuantizeError
from .evaluate import Options, Plan, parse_tensor_type, plan
from .imatrix import read_imatrix
from .model_facts import read_model
from .policy import loader
from .policy.model import Policy

DEFAULT_PIN = "4227c9be"
PREDICTED_PINS = ("4227c9be", "b6700")  # the stock model (stock/b6700.py) covers this family only


def make_plan(model_path, ftype: str, *, policy: "str | Policy" = "stock", imatrix=None, output_tensor_type=None,
              token_embedding_type=None, tensor_types=(), pure=False, leave_output_tensor=False,
              pin: str = DEFAULT_PIN) -> Plan:
    if pin not in PREDICTED_PINS:
        from .errors import UsageError

        raise UsageError(f"no prediction model for pin '{pin}'",
                         hint=f"type choice is modelled for {', '.join(PREDICTED_PINS)}; 49bfddeca's hook and "
                              f"rendering work (qpatch apply/build), its predictions do not exist yet")
    ft = parse_ftype(ftype)
    pol = policy if isinstance(policy, Policy) else loader.load(policy)
    model = read_model(model_path)
    opts = Options(
        ftype=ft,
        imatrix=read_imatrix(imatrix) if imatrix else None,
        output_tensor_type=parse_type(output_tensor_type, what="--output-tensor-type") if output_tensor_type else None,
        token_embedding_type=parse_type(token_embedding_type, what="--token-embedding-type") if token_embedding_type else None,
        tensor_types=tuple(parse_tensor_type(s) for s in tensor_types),
        pure=pure,
        leave_output_tensor=leave_output_tensor,
    )
    return plan(model, pol, opts, pin=pin)


def require_runnable(p: Plan):
    """Raise when llama-quantize would refuse or abort this job."""
    if p.errors:
        more = f" (and {len(p.errors) - 1} more)" if len(p.errors) > 1 else ""
        raise QuantizeError(f"llama-quantize would fail: {p.errors[0]}{more}")
