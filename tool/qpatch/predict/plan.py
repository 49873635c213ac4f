"""The plan: every tensor's type, bytes and deciding rule as a pin's llama-quantize writes them.

A family's `walk` (families/base.py) decides one tensor at a time into an `Outcome`; the engine
(engine.py) drives it over the tensors and freezes the result into a `Plan`, built once, never
changed after. `TensorPlan.status` says what the binary does with a tensor, so reports and export
never read the rule's words.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qpatch.gguf.catalogue import T, tensor_bytes

if TYPE_CHECKING:
    from qpatch.families.base import Family
    from qpatch.gguf.header import TensorInfo
    from qpatch.gguf.model_facts import ModelFacts
    from qpatch.policy.model import Policy
    from qpatch.predict.options import Options


class Status(enum.Enum):
    """What llama-quantize does with a tensor: what reports and export read, rather than the rule's words."""

    QUANTIZED = "quantized"  # converted to `type` (which may be its source type only through an override)
    KEPT = "kept"  # not quantizable (norms, biases, router weights...): written as it is
    COPIED = "copied"  # the COPY ftype: every tensor written as it is
    SAME_TYPE = "same type"  # the chosen type is the source type: written as it is


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    src_type: T
    type: T
    rule: str
    status: Status
    nbytes: int
    fell_back: bool = False  # the shape fallback replaced the chosen type
    chosen: bool = False  # went through type choice (quantizable, quantized default type, no --pure)

    @property
    def quantized(self) -> bool:
        return self.status is Status.QUANTIZED


@dataclass(frozen=True)
class Plan:
    model: "ModelFacts"
    policy: "Policy"
    pin: str
    family: "Family"  # whose llama-quantize the plan predicts (its flags, its catalogue)
    options: "Options"
    tensors: tuple[TensorPlan, ...]
    errors: tuple[str, ...] = ()  # what would make llama-quantize abort
    # the subset of `errors` that a --dry-run does not reach (imatrix checks, writing the data)
    real_run_only: tuple[str, ...] = ()
    # what is legal but probably not what the user meant: a policy for another architecture, rules that
    # select no tensor of this model, an imatrix that does not fit it
    warnings: tuple[str, ...] = ()

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


@dataclass
class Outcome:
    """What a family's walk finds, tensor by tensor in its binary's order: the plans and the problems."""

    tensors: list[TensorPlan] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    real_run_only: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def fail(self, message: str, *, real_run_only: bool = False) -> None:
        """llama-quantize would abort (`real_run_only`: only a real run, not --dry-run, gets there)."""
        self.errors.append(message)
        if real_run_only:
            self.real_run_only.append(message)

    def kept(self, t: "TensorInfo", copy: bool) -> None:
        """A tensor the binary writes as it is: not quantizable, or every tensor of the COPY ftype."""
        why, status = ("copy (COPY ftype)", Status.COPIED) if copy else ("not quantized (kept as is)", Status.KEPT)
        self.tensors.append(TensorPlan(t.name, t.shape, t.type, t.type, why, status, tensor_bytes(t.type, t.shape)))

    def same_type(self, t: "TensorInfo", why: str, fell: bool, chosen: bool) -> None:
        """Type choice gave the tensor's own type: the binary copies it."""
        self.tensors.append(TensorPlan(t.name, t.shape, t.type, t.type, why + " (already this type)",
                                       Status.SAME_TYPE, tensor_bytes(t.type, t.shape), fell, chosen))

    def quantized(self, t: "TensorInfo", new: T, why: str, fell: bool, chosen: bool, *, failed: bool = False) -> None:
        """The tensor converted to `new` (`failed`: the run aborts at it; its bytes are the source's)."""
        nbytes = tensor_bytes(t.type if failed else new, t.shape)
        self.tensors.append(TensorPlan(t.name, t.shape, t.type, new, why, Status.QUANTIZED, nbytes, fell, chosen))
