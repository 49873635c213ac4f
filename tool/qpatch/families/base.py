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
from qpatch.predict.options import Overrides, TypeOption
from qpatch.predict.plan import Outcome

if TYPE_CHECKING:
    from qpatch.gguf.header import TensorInfo
    from qpatch.gguf.model_facts import ModelFacts
    from qpatch.policy.model import Policy
    from qpatch.predict.options import Options
    from qpatch.predict.plan import TensorPlan


class Walk(ABC):
    """One job on a family's llama-quantize: what its pre-pass set up, the tensors in the binary's processing
    order (`order`), and each tensor's decision, which the engine asks for in that order (`decide`) and which
    lands in `out`, with what would make the binary abort."""

    def __init__(self, order: tuple["TensorInfo", ...]):
        self.order = order
        self.out = Outcome()

    @abstractmethod
    def decide(self, t: "TensorInfo") -> None:
        """Add tensor `t`'s plan (and any error it causes) to `out`."""


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
