"""llama-quantize's options that change types: one job's, parsed (`Options`), and the declarations a pin
family makes of the options its binary has (`TypeOption` and its forms).

A family lists its options once, in `families/<name>/options.py`. Everything else reads that list: the
click decorator every job command shares (cli/job_options.py), `job.make_options` (parsing, refusing what
the pin's binary lacks), `Job.quantize_args` (the binary's spelling), the plan header (report.py) and
export's check that a plan has none. Nothing outside a family names one of its options.

Every job command reads this module as it starts (its click options come from the declarations): it imports
nothing heavy at module level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from qpatch.errors import UsageError

if TYPE_CHECKING:
    from qpatch.gguf.catalogue import Catalogue, Ftype, T


@dataclass(frozen=True)
class Options:
    """One job's llama-quantize options that change types, as the pin's family parsed them."""

    ftype: "Ftype"
    imatrix: dict[str, int] | None = None  # entry name -> length; None: no --imatrix
    # the ordered regex=type overrides (whichever of the family's options gave them), patterns as its binary keeps them
    overrides: tuple[tuple[str, "T"], ...] = ()
    # every other option given: (its declared name, its parsed value), in the family's order of declaration
    values: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str, default: Any = None) -> Any:
        """The parsed value of the option declared as `name`, or `default` where the job did not give it."""
        for key, value in self.values:
            if key == name:
                return value
        return default

    @property
    def has_imatrix(self) -> bool:
        return bool(self.imatrix)

    @property
    def any_given(self) -> bool:
        """Whether the job gives any type option at all (export wants a plan with none)."""
        return bool(self.overrides or self.values)


# ------------------------------------------------------------------ declarations


class TypeOption:
    """One option of a family's llama-quantize that changes types. `name` is the keyword `Job.create` takes
    (and the click parameter); `flag` is the binary's spelling; `cli_flag`, qpatch's where it differs.
    (Plain classes, not dataclasses: every job command builds them as it starts, where milliseconds show.)"""

    __slots__ = ("name", "flag", "help", "cli_flag")

    def __init__(self, name: str, flag: str, help: str, cli_flag: str = ""):
        self.name, self.flag, self.help, self.cli_flag = name, flag, help, cli_flag

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.option!r})"

    @property
    def option(self) -> str:
        """The option as a qpatch user types it."""
        return self.cli_flag or self.flag

    def click_kwargs(self) -> dict[str, Any]:
        return {"metavar": "TYPE"}

    def parse(self, raw: Any, catalogue: "Catalogue") -> Any:
        """The value as the binary reads it; UsageError where it would refuse it."""
        raise NotImplementedError

    def args(self, value: Any, catalogue: "Catalogue") -> list[str]:
        """The binary's arguments for the parsed value."""
        raise NotImplementedError

    def text(self, value: Any) -> str:
        """The value as a plan's header shows it."""
        raise NotImplementedError


class TypeValue(TypeOption):
    """One ggml type (--output-tensor-type q8_0)."""

    def parse(self, raw, catalogue):
        return catalogue.parse_type(raw, what=self.flag)

    def args(self, value, catalogue):
        return [self.flag, catalogue.ggml_name(value)]

    def text(self, value):
        return f"{self.flag} {value.name.lower()}"


class Switch(TypeOption):
    """A flag with no value (--pure)."""

    def click_kwargs(self):
        return {"is_flag": True}

    def parse(self, raw, catalogue):
        return bool(raw)

    def args(self, value, catalogue):
        return [self.flag]

    def text(self, value):
        return self.flag


class Layers(TypeOption):
    """Block numbers, comma-separated (--prune-layers 3,5): parsed as non-negative ints, sorted, unique."""

    def click_kwargs(self):
        return {"metavar": "L0,L1,..."}

    def parse(self, raw, catalogue):
        out = []
        for part in str(raw).split(","):
            try:
                i = int(part)
            except ValueError:
                i = -1
            if i < 0:
                raise UsageError(f"{self.option}: invalid layer id '{part}'")
            out.append(i)
        return tuple(sorted(set(out)))

    def args(self, value, catalogue):
        return [self.flag, ",".join(map(str, value))]

    def text(self, value):
        return f"{self.flag} {','.join(map(str, value))}"


class PerKind(TypeOption):
    """A family of per-kind type options (ik_llama.cpp's --attn-v-type TYPE ...), given to qpatch as one
    repeatable `cli_flag OPTION=TYPE` (or, from Python, a dict option -> type). `flag` spells each option:
    `{}` stands for its name with dashes."""

    __slots__ = ("choices",)

    def __init__(self, name: str, flag: str, help: str, cli_flag: str = "", *, choices: tuple[str, ...] = ()):
        super().__init__(name, flag, help, cli_flag)
        self.choices = choices

    def click_kwargs(self):
        return {"multiple": True, "metavar": "OPTION=TYPE"}

    def parse(self, raw, catalogue):
        items = list(raw.items()) if isinstance(raw, dict) else [s.partition("=")[::2] for s in raw]
        out = []
        for key, value in items:
            key = key.strip().lstrip("-").replace("-", "_")
            if key not in self.choices:
                known = ", ".join(k.replace("_", "-") for k in self.choices) or "none"
                raise UsageError(f"{self.option} {key.replace('_', '-')}: not one of this pin's per-kind options",
                                 hint=f"options: {known}")
            out.append((key, catalogue.parse_type(value, what=self.flag.format(key.replace("_", "-")))))
        return tuple(out)

    def args(self, value, catalogue):
        return [a for key, t in value for a in (self.flag.format(key.replace("_", "-")), catalogue.ggml_name(t))]

    def text(self, value):
        return " ".join(f"{self.flag.format(k.replace('_', '-'))} {t.name.lower()}" for k, t in value)


class Overrides(TypeOption):
    """The ordered regex=type overrides (--tensor-type, ik's --custom-q): they become `Options.overrides`.
    `parse_specs` reads PAT=TYPE texts as the binary does; `joined`: all of them go in one argument,
    comma-separated; `exact_type_names`: the binary matches ggml_type_name exactly (q4_K), not lower-cased."""

    __slots__ = ("parse_specs", "joined", "exact_type_names")

    def __init__(self, name: str, flag: str, help: str, cli_flag: str = "", *,
                 parse_specs: Callable[[list[str], "Catalogue", str], tuple] | None = None, joined: bool = False,
                 exact_type_names: bool = False):
        super().__init__(name, flag, help, cli_flag)
        self.parse_specs, self.joined, self.exact_type_names = parse_specs, joined, exact_type_names

    def click_kwargs(self):
        return {"multiple": True, "metavar": "PAT=TYPE" + (",..." if self.joined else "")}

    def specs(self, raw: Any) -> list[str]:
        """The PAT=TYPE texts the user gave."""
        return [raw] if isinstance(raw, str) else list(raw)

    def parse(self, raw, catalogue):
        return self.read(self.specs(raw), catalogue, self.option)

    def read(self, specs: list[str], catalogue: "Catalogue", flag: str) -> tuple:
        """(pattern, type) pairs, in order; `flag`: the option they came with, for messages."""
        parse = self.parse_specs or parse_tensor_types
        return tuple(parse(specs, catalogue, flag))

    def args(self, value, catalogue):
        specs = [f"{p}={catalogue.ggml_name(t)}" for p, t in value]
        return self.spell(specs)

    def spell(self, specs: list[str]) -> list[str]:
        """The binary's arguments for PAT=TYPE texts (one argument for all, or one flag each)."""
        if self.joined:  # a second flag would append to the first (ik's parse_custom_quants)
            return [self.flag, ",".join(specs)] if specs else []
        return [a for s in specs for a in (self.flag, s)]

    def text(self, value):
        return f"{len(value)} {self.flag}" + (" rules" if self.joined else "")


class OverridesFile(Overrides):
    """A file of PAT=TYPE entries separated by spaces or newlines (as `file >> arg`): more overrides, read by
    the family's main override option and passed to the binary as such."""

    def click_kwargs(self):
        return {"metavar": "FILE"}

    def specs(self, raw):
        try:
            return Path(raw).read_text().split()
        except OSError as e:
            raise UsageError(f"{self.option} {raw}: {e.strerror}") from None


def parse_tensor_type(spec: str, catalogue: "Catalogue", flag: str = "--tensor-type") -> tuple[str, "T"]:
    """`PATTERN=TYPE` as mainline llama-quantize parses it: the pattern is lowercased. `flag`: the option it
    came with."""
    if "=" not in spec:
        raise UsageError(f"malformed {flag} '{spec}' (expected PATTERN=TYPE)")
    pat, _, typ = spec.partition("=")
    if not pat:
        raise UsageError(f"{flag} '{spec}': missing tensor name")
    if not typ:
        raise UsageError(f"{flag} '{spec}': missing quantization type")
    pat = pat.lower()
    try:
        re.compile(pat)
    except re.error as e:
        raise UsageError(f"{flag} '{spec}': bad regex: {e}") from None
    return pat, catalogue.parse_type(typ, what=f"type in {flag}")


def parse_tensor_types(specs: list[str], catalogue: "Catalogue", flag: str) -> tuple:
    return tuple(parse_tensor_type(s, catalogue, flag) for s in specs)


# The options mainline llama-quantize has had since the families began; a family lists those its binary has.
TENSOR_TYPE = Overrides("tensor_types", "--tensor-type", "as llama-quantize (repeatable)")
TENSOR_TYPE_FILE = OverridesFile("tensor_type_file", "--tensor-type-file", "as llama-quantize's --tensor-type-file")
OUTPUT_TENSOR_TYPE = TypeValue("output_tensor_type", "--output-tensor-type", "as llama-quantize's --output-tensor-type")
TOKEN_EMBEDDING_TYPE = TypeValue("token_embedding_type", "--token-embedding-type",
                                 "as llama-quantize's --token-embedding-type")
PURE = Switch("pure", "--pure", "as llama-quantize's --pure")
LEAVE_OUTPUT_TENSOR = Switch("leave_output_tensor", "--leave-output-tensor",
                             "as llama-quantize's --leave-output-tensor")
PRUNE_LAYERS = Layers("prune_layers", "--prune-layers", "as llama-quantize's --prune-layers")


def refuse_missing(declared: tuple[TypeOption, ...], known: dict[str, TypeOption], given: dict[str, Any],
                   whose: str) -> None:
    """UsageError naming the first option given (non-empty in `given`, name -> value) that the family's
    declarations `declared` lack; `known`: every family's, to spell it; `whose`: the binary, for the message."""
    mine = {o.name for o in declared}
    for name, raw in given.items():
        if raw and name not in mine:
            flag = known[name].option if name in known else "--" + name.replace("_", "-")
            raise UsageError(f"{flag} is not an option of {whose}")


def parse_given(declared: tuple[TypeOption, ...], catalogue: "Catalogue", given: dict[str, Any]
                ) -> tuple[tuple[tuple[str, "T"], ...], tuple[tuple[str, Any], ...]]:
    """The user's raw values (`given`: name -> value; empty means not given) parsed by the family's
    declarations: (the ordered overrides, the other options' values), as `Options` holds them."""
    main = next((o for o in declared if type(o) is Overrides), None)
    overrides: list = []
    values = []
    for o in declared:
        raw = given.get(o.name)
        if not raw:
            continue
        if isinstance(o, Overrides):
            reader = o if type(o) is Overrides else main
            assert reader is not None  # families.check: an OverridesFile goes with an Overrides
            overrides += reader.read(o.specs(raw), catalogue, o.option)
        else:
            values.append((o.name, o.parse(raw, catalogue)))
    return tuple(overrides), tuple(values)
