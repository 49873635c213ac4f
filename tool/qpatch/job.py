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
from qpatch.families import all_options
from qpatch.families.base import Family
from qpatch.families.pins import DEFAULT_PIN, family_of
from qpatch.gguf.imatrix import read_imatrix
from qpatch.gguf.model_facts import ModelFacts, read_model
from qpatch.policy import loader
from qpatch.policy.model import Policy
from qpatch.predict import options as type_options
from qpatch.predict.engine import plan
from qpatch.predict.options import Options
from qpatch.predict.plan import Plan


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
        o, fam = self.options, self.family
        args = ["--imatrix", str(self.imatrix_path)] if self.imatrix_path else []
        args += fam.overrides.args(o.overrides, fam.catalogue)
        declared = {d.name: d for d in fam.options}
        for name, value in o.values:  # in the family's order of declaration
            args += declared[name].args(value, fam.catalogue)
        args += ["--override-kv", f"qpatch.policy=str:{self.policy.name}",
                 "--override-kv", f"qpatch.pin=str:{self.pin}"]
        if self.model_path is None:
            raise UsageError("a job made from model facts has no file for llama-quantize to read")
        args += [str(self.model_path), str(out), o.ftype.name]
        return args + ([str(threads)] if threads else [])


def make_options(pin: str, ftype: str, *, imatrix=None, **given) -> Options:
    """llama-quantize's type options as the pin's family reads them (`given`: option name -> the user's value,
    as families/<name>/options.py declares them); options its binary lacks are refused."""
    fam = family_of(pin)
    cat = fam.catalogue
    known = {o.name: o for o, _ in all_options()}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(f"make_options() got unknown option(s) {', '.join(unknown)}")
    type_options.refuse_missing(fam.options, known, given, f"pin {pin}'s llama-quantize (family {fam.name})")
    ft = cat.parse_ftype(ftype)
    entries = read_imatrix(imatrix, fam.imatrix_formats, f"pin {pin}'s llama-quantize") if imatrix else None
    overrides, values = type_options.parse_given(fam.options, cat, given)
    return Options(ftype=ft, imatrix=entries, overrides=overrides, values=values)


def make_plan(model, ftype: str, *, policy: "str | Policy" = "stock", pin: str | None = None, **options) -> Plan:
    """The plan of a one-off job (library callers and tests): `Job.create(...).plan()`."""
    return Job.create(model, ftype, policy=policy, pin=pin, **options).plan()


def require_runnable(p: Plan):
    """Raise when llama-quantize would refuse or abort this job."""
    if p.errors:
        more = f" (and {len(p.errors) - 1} more)" if len(p.errors) > 1 else ""
        raise QuantizeError(f"llama-quantize would fail: {p.errors[0]}{more}")
