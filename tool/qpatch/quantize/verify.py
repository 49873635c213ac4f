"""Compare a quantized GGUF with the prediction: every tensor's type, and the rule that chose it.

The ftype comes from the file's `general.file_type` unless given. Shapes and names come from
the source model when given, else from the quantized file itself (names and ne[] survive
quantization). Whether an imatrix was used is read from `quantize.imatrix.*` keys that
llama-quantize writes when no imatrix file is passed; then every entry is assumed present.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from qpatch.errors import ModelError, UsageError, VerifyMismatch
from qpatch.families.pins import DEFAULT_PIN, family_of
from qpatch.gguf.header import read_model_headers
from qpatch.gguf.model_facts import ModelFacts, read_model
from qpatch.job import Job
from qpatch.policy.model import Policy
from qpatch.predict.plan import Plan


class _AllEntries(dict):
    """An imatrix known to have been used, whose entries are not at hand: every tensor has one."""

    def __init__(self, model: ModelFacts):
        super().__init__({t.name: t.shape[0] * (t.shape[2] if len(t.shape) > 2 else 1) for t in model.tensors})


@dataclass
class Mismatch:
    name: str
    expected: str
    actual: str
    rule: str


@dataclass
class VerifyResult:
    plan: Plan
    quant: ModelFacts
    mismatches: list[Mismatch]
    missing: list[str]
    extra: list[str]
    imatrix_source: str

    @property
    def ok(self) -> bool:
        return not (self.mismatches or self.missing or self.extra)


def verify(quant_path, *, policy: "str | Policy | None" = None, source=None, ftype: str | None = None, imatrix=None,
           pin: str | None = None, **options) -> VerifyResult:
    """`qpatch verify`: the job is read from the file where not given (policy, pin, ftype, imatrix use),
    then compared. `options`: llama-quantize's type options used, as `job.make_options` takes them."""
    kv = read_model_headers(quant_path)[0].kv
    # what made the file, as `qpatch quantize` records it (--override-kv qpatch.policy / qpatch.pin)
    policy = policy or kv.get("qpatch.policy")
    if not policy:
        raise UsageError(f"{quant_path} does not say which policy made it (no qpatch.policy key: not made by "
                         "`qpatch quantize`)", hint="pass --policy NAME")
    pin = pin or kv.get("qpatch.pin") or DEFAULT_PIN
    cat = family_of(pin).catalogue
    quant = read_model(quant_path, cat.family)  # type ids in the pin's own numbering
    if not ftype:
        if quant.file_type is None:
            raise ModelError(f"{quant_path}: no general.file_type; pass --ftype")
        ft = cat.ftype_by_id(quant.file_type)
        if ft is None:
            raise ModelError(f"{quant_path}: general.file_type {quant.file_type} is not an ftype of pin {pin}")
        ftype = ft.name
    job = Job.create(source or quant, ftype, policy=policy, pin=pin, imatrix=imatrix, **options)
    if imatrix:
        im_src = f"file {imatrix}"
    elif "quantize.imatrix.file" in kv or "quantize.imatrix.entries_count" in kv:
        job = dataclasses.replace(job, options=dataclasses.replace(job.options, imatrix=_AllEntries(job.model)))
        im_src = f"used ({kv.get('quantize.imatrix.file', '?')}), entries assumed present"
    else:
        im_src = "none"
    return compare(job, quant_path, quant=quant, imatrix_source=im_src)


def compare(job: Job, quant_path, *, quant: ModelFacts | None = None, imatrix_source: str | None = None,
            plan: Plan | None = None) -> VerifyResult:
    """Every tensor of the quantized file against the job's plan (`plan`: the job's, if the caller has it)."""
    quant = quant or read_model(quant_path, job.family.catalogue.family)
    p = plan or job.plan()
    actual = {t.name: t.type for t in quant.tensors}
    mismatches = [Mismatch(t.name, t.type.name, actual[t.name].name, t.rule)
                  for t in p.tensors if t.name in actual and actual[t.name] != t.type]
    predicted = {t.name for t in p.tensors}
    return VerifyResult(
        plan=p, quant=quant, mismatches=mismatches, missing=sorted(predicted - set(actual)),
        extra=sorted(set(actual) - predicted),
        imatrix_source=imatrix_source or (f"file {job.imatrix_path}" if job.imatrix_path else "none"),
    )


def report(r: VerifyResult) -> str:
    p = r.plan
    head = (f"{r.quant.name}: {len(p.tensors)} tensors, policy={p.policy.name}, ftype={p.options.ftype.name}, "
            f"imatrix={r.imatrix_source}")
    if r.ok:
        return f"{head}\nOK: every tensor has the predicted type"
    lines = [head, ""]
    if r.mismatches:  # grouped as plan groups: one row per (kind, expected, actual, rule) over block ranges
        from qpatch.gguf.model_facts import block_of, kind_of
        from qpatch.predict.report import block_label

        runs: dict[tuple[str, str, str, str], list[int]] = {}
        for m in r.mismatches:
            runs.setdefault((kind_of(m.name), m.expected, m.actual, m.rule), []).append(block_of(m.name))
        rows = [(k if b == [-1] else block_label(b, k), e, a, str(len(b)), rule)
                for (k, e, a, rule), b in runs.items()]
        w = [max(len(x[i]) for x in rows + [("tensors", "expected", "actual", "n")]) for i in range(4)]
        lines.append(f"{'tensors':<{w[0]}}  {'expected':<{w[1]}}  {'actual':<{w[2]}}  {'n':>{w[3]}}  deciding rule")
        for t, e, a, n, rule in rows:
            lines.append(f"{t:<{w[0]}}  {e:<{w[1]}}  {a:<{w[2]}}  {n:>{w[3]}}  {rule}")
    for n in r.missing:
        lines.append(f"missing from the quantized file: {n}")
    for n in r.extra:
        lines.append(f"not in the model: {n}")
    lines.append("")
    lines.append(f"MISMATCH: {len(r.mismatches)} of {len(p.tensors)} tensors differ"
                 + (f", {len(r.missing)} missing, {len(r.extra)} extra" if r.missing or r.extra else ""))
    return "\n".join(lines)


def check(r: VerifyResult):
    if not r.ok:
        raise VerifyMismatch(f"{len(r.mismatches)} tensor(s) differ from the {r.plan.policy.name} prediction")

