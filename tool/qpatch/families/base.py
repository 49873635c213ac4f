"""What every pin family provides: a `Family` (each family folder's predict.py defines one, as `FAMILY`)
and the `Walk` its llama-quantize takes over one job's tensors.

The predict engine (predict/engine.py) needs `walk`; export needs `override_result` and
`unreachable_reason`; the other members are facts of the family's binary that one stage each reads
(its options, export formats, imatrix formats, CMake definitions). `families.check` validates a
family when it registers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from qpatch.gguf.catalogue import Catalogue, T, load_catalogue
from qpatch.gguf.model_facts import kind_of
from qpatch.predict.options import Overrides, TypeOption
from qpatch.predict.plan import Outcome
from qpatch.predict.rules import Ctx, Positions, policy_choice
from qpatch.predict.rules import why as explain

if TYPE_CHECKING:
    from qpatch.gguf.header import TensorInfo
    from qpatch.gguf.model_facts import ModelFacts
    from qpatch.policy.model import Policy
    from qpatch.predict.options import Options
    from qpatch.predict.plan import TensorPlan


class Walk(ABC):
    """One job on a family's llama-quantize: what its pre-pass set up, the tensors in the binary's processing
    order (`order`), and each tensor's decision, which the engine asks for in that order (`decide`) and which
    lands in `out`, with what would make the binary abort.

    `model` is the model as the binary's hook sees it; `order` defaults to its tensors, and the policy's
    ordinals count over `counted` (default: the model), e.g. the blocks --prune-layers keeps."""

    def __init__(self, model: "ModelFacts", policy: "Policy", opts: "Options",
                 order: tuple["TensorInfo", ...] | None = None, counted: "ModelFacts | None" = None):
        self.model, self.policy, self.opts = model, policy, opts
        self.order = model.tensors if order is None else order
        self.positions = Positions(counted or model)
        self.out = Outcome()

    @abstractmethod
    def decide(self, t: "TensorInfo") -> None:
        """Add tensor `t`'s plan (and any error it causes) to `out`."""

    def apply_policy(self, t: "TensorInfo", stock: T, why: str, site: str) -> tuple[T, str]:
        """Where the family's hook calls the generated `qpatch::choose`: the policy's type and deciding rule for
        `t`, whose stock choice is `stock` (for `why`) at stock's rule site `site`; stock's where no rule
        decides."""
        ft = self.opts.ftype
        x = Ctx(t.name, kind_of(t.name), t.shape, self.model, ft.name, self.opts.has_imatrix, stock, ft.default,
                self.positions, site)
        picked, rule = policy_choice(self.policy, x)
        return (picked, explain(rule, x)) if rule is not None else (stock, why)


class Family(ABC):
    """One family of llama.cpp commits whose type choice works the same way."""

    name: str = ""
    summary: str = ""
    project: str = "llama.cpp"  # the code base (a fork's families have their own): docs compare pins within one
    # every option of this family's llama-quantize that changes types, beyond the ftype and --imatrix
    # (families/<name>/options.py declares them; exactly one is the plain `Overrides`)
    options: tuple[TypeOption, ...] = ()
    # what `qpatch export` can write for this family's stock llama-quantize
    export_formats: tuple[str, ...] = ("tensor-type",)
    # the imatrix file formats its llama-quantize reads (gguf.imatrix.FORMATS)
    imatrix_formats: tuple[str, ...] = ("gguf", "legacy")
    # CMake definitions the family's tree needs beyond build.py's own (a user's -D still wins)
    cmake_defines: tuple[tuple[str, str], ...] = ()

    @property
    def catalogue(self) -> Catalogue:
        return load_catalogue(self.name)

    @property
    def folder(self) -> Path:
        return Path(__file__).parent / self.name

    @property
    def template(self) -> str:
        """The family's policy template, relative to the template loader's roots."""
        return f"{self.name}/policy.h.j2"

    @property
    def overrides(self) -> Overrides:
        """The option that takes the ordered regex=type overrides (--tensor-type, ik's --custom-q)."""
        return next(o for o in self.options if type(o) is Overrides)

    @abstractmethod
    def walk(self, model: "ModelFacts", policy: "Policy", opts: "Options") -> Walk:
        """This family's (patched) llama-quantize over one job's tensors."""

    @abstractmethod
    def override_result(self, stock: "TensorPlan", override: T) -> T | None:
        """The type an override to `override` gives a tensor whose stock plan is `stock`: None where
        overrides cannot reach it. Raises ValueError where the binary would abort."""

    def unreachable_reason(self, stock: "TensorPlan", wanted: T) -> str:
        """Why no override gives this tensor `wanted` (for export's report)."""
        return f"no {self.overrides.flag} override gives this tensor {wanted.name} on this pin"

    def __repr__(self) -> str:
        return f"<pin family {self.name}>"
