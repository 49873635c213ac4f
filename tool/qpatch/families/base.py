"""What every pin family provides (each family folder subclasses `Family` once, as `FAMILY`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qpatch.gguf.catalogue import Catalogue, T, load_catalogue

if TYPE_CHECKING:
    from qpatch.gguf.model_facts import ModelFacts
    from qpatch.policy.model import Policy
    from qpatch.predict.evaluate import Options, Plan, TensorPlan


class Family:
    """One family of llama.cpp commits whose type choice works the same way."""

    name: str = ""
    summary: str = ""
    project: str = "llama.cpp"  # the code base (a fork's families have their own): docs compare pins within one
    # llama-quantize's --tensor-type: which of several matching patterns decides ("first" | "last")
    tensor_type_match: str = "last"
    # options of this family's llama-quantize that change types, beyond the ftype and --imatrix
    options: frozenset[str] = frozenset()
    # what `qpatch export` can write for this family's stock llama-quantize
    export_formats: tuple[str, ...] = ("tensor-type",)
    # the llama-quantize flag that takes the ordered regex=type overrides (Options.tensor_types)
    tensor_type_flag: str = "--tensor-type"
    # whether all the overrides go in one argument of that flag (ik's comma-separated --custom-q) or one each
    overrides_in_one_argument: bool = False
    # whether the overrides name types exactly as ggml_type_name spells them (ik: q4_K, iq4_ks), not lower-cased
    exact_type_names: bool = False
    # per-kind type options of its llama-quantize (ik: attn_v_type -> --attn-v-type ...), for --kind-type
    kind_options: tuple[str, ...] = ()
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

    def parse_tensor_types(self, specs: list[str], catalogue: Catalogue, flag: str | None = None) -> tuple:
        """The ordered regex=type overrides as this family's llama-quantize reads its flag's values (`flag`: the
        option they came with, for messages; default: the family's own)."""
        from qpatch.predict.evaluate import parse_tensor_type

        return tuple(parse_tensor_type(s, catalogue, flag or self.tensor_type_flag) for s in specs)

    def tensor_type_args(self, specs: list[str]) -> list[str]:
        """llama-quantize's arguments for those overrides."""
        out: list[str] = []
        for spec in specs:
            out += [self.tensor_type_flag, spec]
        return out

    def plan(self, model: "ModelFacts", policy: "Policy", opts: "Options") -> "Plan":
        """Every tensor's type as this family's (patched) llama-quantize writes it."""
        raise NotImplementedError

    def override_result(self, stock: "TensorPlan", override: T) -> T | None:
        """The type a `--tensor-type` override to `override` gives a tensor whose stock plan is `stock`:
        None where overrides cannot reach it. Raises ValueError where the binary would abort."""
        raise NotImplementedError

    def unreachable_reason(self, stock: "TensorPlan", wanted: T) -> str:
        """Why no `--tensor-type` override gives this tensor `wanted` (for export's report)."""
        return f"no --tensor-type override gives this tensor {wanted.name} on this pin"

    def dry_run_ok(self, plan: "Plan") -> bool:
        """Whether `llama-quantize --dry-run` completes on this job (only families that have it)."""
        raise NotImplementedError(f"pin family {self.name} has no --dry-run")

    def __repr__(self) -> str:
        return f"<pin family {self.name}>"
