"""ggml types and llama ftypes, as each pin family's own source defines them.

Every family folder holds a `catalogue.json` extracted from its pin's source by
`qpatch.families.extract` (ids from ggml.h and llama.h, block sizes from the pin's vendored
gguf-py, the ftypes llama-quantize accepts from QUANT_OPTIONS, defaults from llama-quant.cpp),
never hand-copied and never taken from the installed `gguf` package, which lags the pins.

`T` is one IntEnum over the types of every family, by name: a name means the same type (same
block, bytes and row metadata) in every family that has it, which `_load` checks. Its value is the
type's ggml id where the families agree on it (every mainline type); a family can number a type
differently (ik_llama.cpp's ids clash with mainline's from 41 up), so the ids a file on disk uses
are a family's, reached through `Catalogue.ggml_id` and `decode_type(id, family)`, which also reads
an id when the family is not known. What else differs by pin (which ftypes exist, which types the
command line accepts) is also a `Catalogue`, reached through the pin's family.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from qpatch.errors import UsageError
from qpatch.gguf import FAMILIES_DIR, family_names


def _catalogue_files() -> list[Path]:
    return [FAMILIES_DIR / name / "catalogue.json" for name in family_names()]


_NEVER_STORED = ("Q8_1", "Q8_K", "Q8_K16", "Q8_K32", "Q8_K64", "Q8_K128", "Q8_KR8", "Q8_0_X4", "Q8_1_X4", "Q8_2_X4")


def _load() -> tuple[dict[str, int], dict[str, tuple[int, int, int]], dict[str, dict[int, str]]]:
    """Name -> enum value, name -> (block, bytes, row metadata), family -> ggml id -> name."""
    values: dict[str, int] = {}
    sizes: dict[str, tuple[int, int, int]] = {}
    by_family: dict[str, dict[int, str]] = {}
    files = _catalogue_files()
    # Mainline numbering first: a type keeps its ggml id as its value unless another name holds it.
    for path in files:
        ids = by_family[path.parent.name] = {}
        for t in json.loads(path.read_text())["types"]:
            ids[t["id"]] = t["name"]
            size = (t["block"], t["bytes"], t.get("row_meta", 0))
            # Dot-product-only types (Q8_1, ...) are never stored in a model: their layout may differ.
            if sizes.setdefault(t["name"], size) != size and t["name"] not in _NEVER_STORED:
                raise RuntimeError(f"{path}: ggml type {t['name']} is {size} (block, bytes, row metadata), another "
                                   f"family says {sizes[t['name']]}")
    taken: dict[int, str] = {}
    for path in files:
        for t in json.loads(path.read_text())["types"]:
            if t["name"] in values:
                continue
            value = t["id"] if t["id"] not in taken else 1000 + t["id"]
            values[t["name"]] = value
            taken[value] = t["name"]
    return values, sizes, by_family


_VALUES, _SIZES, _IDS_BY_FAMILY = _load()
_GGML_NAMES = {p.parent.name: {t["name"]: t.get("ggml_name", t["name"].lower())
                               for t in json.loads(p.read_text())["types"]}
               for p in _catalogue_files()}
# the enum as a real class, generated from the same catalogues (render_types_module, below)
from qpatch.gguf.types import GGMLType as T  # noqa: E402

SIZES: dict[T, tuple[int, int, int]] = {T[n]: s for n, s in _SIZES.items()}


def decode_type(ggml_id: int, family: str | None = None) -> T:
    """The type a file's ggml id names: in `family`'s numbering, else in the first family (mainline
    first, by folder name) that has the id. KeyError if none has it."""
    if family is not None:
        return T[_IDS_BY_FAMILY[family][ggml_id]]
    for ids in _IDS_BY_FAMILY.values():
        if ggml_id in ids:
            return T[ids[ggml_id]]
    raise KeyError(ggml_id)


UNQUANTIZED = frozenset({T.F32, T.F16, T.BF16, T.BF16_R16})  # ggml_is_quantized is false for these
# Integer types and the dot-product-only types: never a target of llama-quantize's type choice.
_NOT_TARGETS = frozenset(n for n in ("I8", "I16", "I32", "I64", "F64", *_NEVER_STORED) if n in T.__members__)


def block_size(t: T) -> int:
    return SIZES[t][0]


def type_bytes(t: T) -> int:
    """Bytes per block (per element for F32/F16/BF16)."""
    return SIZES[t][1]


def row_bytes(t: T, n: int) -> int:
    """ggml_row_size: the blocks of a row, plus the per-row metadata some ik_llama.cpp types keep."""
    return SIZES[t][2] + n // block_size(t) * type_bytes(t)


def tensor_bytes(t: T, shape: tuple[int, ...]) -> int:
    rows = 1
    for d in shape[1:]:
        rows *= d
    return row_bytes(t, shape[0]) * rows


def is_quantized(t: T) -> bool:
    return t not in UNQUANTIZED and t.name not in ("I8", "I16", "I32", "I64", "F64")


@dataclass(frozen=True)
class Ftype:
    """A llama ftype: the name llama-quantize accepts, its id, and its default ggml type."""

    name: str  # canonical name as in QUANT_OPTIONS, e.g. Q4_K_M
    id: int  # llama_ftype value
    default: T  # the ftype's default type (llama-quant.cpp)
    enum: str = ""  # llama.h enumerator without LLAMA_FTYPE_, e.g. MOSTLY_Q4_K_M
    copy: bool = False  # COPY: only copy tensors

    @property
    def quantizes(self) -> bool:
        """Whether type choice runs at all (it does only for quantized default types)."""
        return is_quantized(self.default)


@dataclass(frozen=True)
class Catalogue:
    """The types and ftypes of one pin family, in QUANT_OPTIONS order."""

    family: str
    types: tuple[T, ...]  # what the command line accepts as a target type
    ftypes: tuple[Ftype, ...]
    aliases: tuple[tuple[str, str], ...]

    @property
    def by_name(self) -> dict[str, Ftype]:
        return {f.name: f for f in self.ftypes}

    def parse_ftype(self, text: str) -> Ftype:
        """An ftype by name (case-insensitive, aliases allowed) or by numeric id, like llama-quantize."""
        key = text.strip().upper()
        key = dict(self.aliases).get(key, key)
        if key in self.by_name:
            return self.by_name[key]
        if key.isdigit():
            f = self.ftype_by_id(int(key))
            if f is not None:
                return f
        names = ", ".join(f.name for f in self.ftypes)
        raise UsageError(f"unknown ftype '{text}' for pin family {self.family}",
                         hint=f"llama-quantize accepts: {names} (aliases {', '.join(a for a, _ in self.aliases)})")

    def ftype_by_id(self, value: int) -> Ftype | None:
        return next((f for f in self.ftypes if f.id == value and not f.copy), None)

    def parse_type(self, text: str, *, what: str = "type") -> T:
        """A ggml type name as llama-quantize accepts it (case-insensitive, e.g. q4_k, IQ2_XXS)."""
        key = text.strip().upper()
        for t in self.types:
            if t.name == key:
                return t
        names = ", ".join(t.name.lower() for t in self.types)
        raise UsageError(f"unknown ggml {what} '{text}' for pin family {self.family}", hint=f"known types: {names}")

    def has_type(self, t: T) -> bool:
        return t in self.types

    def ggml_id(self, t: T) -> int:
        """The id this family's ggml.h gives `t` (what its GGUF files store)."""
        ids = {name: i for i, name in _IDS_BY_FAMILY[self.family].items()}
        if t.name not in ids:
            raise UsageError(f"ggml type {t.name} does not exist in pin family {self.family}")
        return ids[t.name]

    def ggml_name(self, t: T) -> str:
        """ggml_type_name(t) in this family (e.g. q4_K, iq4_ks): what ik_llama.cpp's options match exactly."""
        return _GGML_NAMES[self.family].get(t.name, t.name.lower())


@cache
def load_catalogue(family: str) -> Catalogue:
    path = FAMILIES_DIR / family / "catalogue.json"
    data = json.loads(path.read_text())
    types = tuple(T[t["name"]] for t in data["types"] if t["name"] not in _NOT_TARGETS)
    ftypes = tuple(Ftype(f["name"], f["id"], T[f["default"]], f["enum"], f.get("copy", False))
                   for f in data["ftypes"])
    return Catalogue(family, types, ftypes, tuple(sorted(data["aliases"].items())))


def all_ftypes() -> tuple[Ftype, ...]:
    """Every ftype any family knows, first family first (policies name ftypes across families)."""
    seen: dict[str, Ftype] = {}
    for path in _catalogue_files():
        for f in load_catalogue(path.parent.name).ftypes:
            seen.setdefault(f.name, f)
    return tuple(seen.values())


# ------------------------------------------------------------------- the generated enum module (gguf/types.py)

TYPES_MODULE = Path(__file__).parent / "types.py"
TYPES_COMMAND = "python -m qpatch.gguf.catalogue --write  (make catalogues does it too)"


def render_types_module() -> str:
    """gguf/types.py: `T` as a real class (editors complete it, mypy checks it), from the catalogues."""
    members = "\n".join(f"    {name} = {value}" for name, value in sorted(_VALUES.items(), key=lambda kv: kv[1]))
    return (f'"""@generated by qpatch.gguf.catalogue from tool/qpatch/families/*/catalogue.json -- DO NOT EDIT.\n\n'
            f"Regenerate: {TYPES_COMMAND}.\ntests/test_catalogue.py fails when it is stale.\n"
            f'"""\n\nimport enum\n\n\nclass GGMLType(enum.IntEnum):\n'
            '    """A ggml tensor type, over every pin family\'s types '
            '(value: its ggml id where the families agree)."""\n\n'
            f"{members}\n\n\nT = GGMLType\n")


def _check_types_module() -> None:
    have = {m.name: m.value for m in T}
    if have != _VALUES:
        raise RuntimeError(f"{TYPES_MODULE} is stale against the families' catalogue.json files: "
                           f"run {TYPES_COMMAND}")


if __name__ != "__main__":
    _check_types_module()
else:
    import sys

    text = render_types_module()
    if sys.argv[1:] == ["--write"]:
        if not TYPES_MODULE.exists() or TYPES_MODULE.read_text() != text:
            TYPES_MODULE.write_text(text)
            print(f"wrote {TYPES_MODULE}")
    else:
        print(text, end="")
