"""One command's request, built once: `Job` holds the model's facts, the ftype and every type option
(parsed as the pin's llama-quantize parses them), the policy, the pin and its family, and the imatrix.
The plan (`Job.plan`) and llama-quantize's argument list (`Job.quantize_args`) are both derived from it,
so what qpatch predicts and what it runs cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from qpatch.errors import QuantizeError, UsageError
from qpatch.families import Family
from qpatch.families.pins import DEFAULT_PIN, family_of
from qpatch.gguf.catalogue import Catalogue
from qpatch.gguf.imatrix import read_imatrix
from qpatch.gguf.model_facts import ModelFacts, read_model
from qpatch.policy import loader
from qpatch.policy.model import Policy
from qpatch.predict.evaluate import Options, Plan, parse_prune_layers, plan


@dataclass(frozen=True)
class Job:
    model: ModelFacts
    model_path: Path | None
    policy: Policy
    pin: str
    family: Family
    options: Options  # the ftype, the imatrix's entries and every type option
    imatrix_path: Path | None = None

    @classmethod
    def create(cls, model, ftype: str, *, policy: "str | Policy" = "stock", pin: str | None = None,
               imatrix=None, **options) -> "Job":
        """`model`: a GGUF path (read once) or ModelFacts; `options`: as `make_options` takes them."""
        pin = pin or DEFAULT_PIN
        opts = make_options(pin, ftype, imatrix=imatrix, **options)  # the user's words are checked first
        pol = policy if isinstance(policy, Policy) else loader.load(policy)
        facts = model if isinstance(model, ModelFacts) else read_model(model)
        return cls(model=facts, model_path=None if isinstance(model, ModelFacts) else Path(model), policy=pol,
                   pin=pin, family=family_of(pin), options=opts, imatrix_path=Path(imatrix) if imatrix else None)

    def with_policy(self, policy: "str | Policy") -> "Job":
        return dataclasses.replace(self, policy=policy if isinstance(policy, Policy) else loader.load(policy))

    def plan(self) -> Plan:
        return plan(self.model, self.policy, self.options, self.family, self.pin)

    def quantize_args(self, out, *, threads: int | None = None) -> list[str]:
        """llama-quantize's arguments for this job (after the binary's path), in its own spelling."""
        o, cat = self.options, self.family.catalogue
        args = ["--imatrix", str(self.imatrix_path)] if self.imatrix_path else []
        args += self.family.tensor_type_args([f"{pat}={cat.ggml_name(t)}" for pat, t in o.tensor_types])
        for key, t in o.kind_types:
            args += [f"--{key.replace('_', '-')}", cat.ggml_name(t)]
        if o.ignore_imatrix_rules:
            args.append("--ignore-imatrix-rules")
        if o.output_tensor_type:
            args += ["--output-tensor-type", cat.ggml_name(o.output_tensor_type)]
        if o.token_embedding_type:
            args += ["--token-embedding-type", cat.ggml_name(o.token_embedding_type)]
        if o.pure:
            args.append("--pure")
        if o.leave_output_tensor:
            args.append("--leave-output-tensor")
        if o.prune_layers:
            args += ["--prune-layers", ",".join(map(str, o.prune_layers))]
        args += ["--override-kv", f"qpatch.policy=str:{self.policy.name}",
                 "--override-kv", f"qpatch.pin=str:{self.pin}"]
        if self.model_path is None:
            raise UsageError("a job made from model facts has no file for llama-quantize to read")
        args += [str(self.model_path), str(out), o.ftype.name]
        return args + ([str(threads)] if threads else [])


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
    flags = {"tensor_type": "--tensor-type" if tensor_types else "--tensor-type-file", "kind_types": "--kind-type"}
    for opt, value in given.items():
        if value and opt not in fam.options:
            raise UsageError(f"{flags.get(opt, '--' + opt.replace('_', '-'))} is not an option of pin {pin}'s "
                             f"llama-quantize (family {fam.name})")
    specs = (list(tensor_types) + (read_tensor_type_file(tensor_type_file) if tensor_type_file else [])
             + list(custom_q))
    return Options(
        ftype=cat.parse_ftype(ftype),
        imatrix=read_imatrix(imatrix, fam.imatrix_formats, f"pin {pin}'s llama-quantize") if imatrix else None,
        output_tensor_type=(cat.parse_type(output_tensor_type, what="--output-tensor-type")
                            if output_tensor_type else None),
        token_embedding_type=(cat.parse_type(token_embedding_type, what="--token-embedding-type")
                              if token_embedding_type else None),
        tensor_types=fam.parse_tensor_types(specs, cat),
        pure=pure,
        leave_output_tensor=leave_output_tensor,
        prune_layers=parse_prune_layers(prune_layers) if prune_layers else (),
        kind_types=parse_kind_types(kind_types, fam, cat),
        ignore_imatrix_rules=ignore_imatrix_rules,
    )


def parse_kind_types(given, fam: Family, cat: Catalogue) -> tuple:
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


def make_plan(model, ftype: str, *, policy: "str | Policy" = "stock", pin: str | None = None, **options) -> Plan:
    """The plan of a one-off job (library callers and tests): `Job.create(...).plan()`."""
    return Job.create(model, ftype, policy=policy, pin=pin, **options).plan()


def require_runnable(p: Plan):
    """Raise when llama-quantize would refuse or abort this job."""
    if p.errors:
        more = f" (and {len(p.errors) - 1} more)" if len(p.errors) > 1 else ""
        raise QuantizeError(f"llama-quantize would fail: {p.errors[0]}{more}")
