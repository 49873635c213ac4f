"""ggml types and llama ftypes, as each pin family's own source defines them.

Every family folder holds a `catalogue.json` extracted from its pin's source by
`qpatch.families.extract` (ids from ggml.h and llama.h, block sizes from the pin's vendored
gguf-py, the ftypes llama-quantize accepts from QUANT_OPTIONS, defaults from llama-quant.cpp),
never hand-copied and never taken from the installed `gguf` package, which lags the pins.

`T` is one IntEnum over the types of every family, valued by ggml id (the mainline families
agree on ids; `_load` checks it). What differs by pin (which ftypes exist, which types the
command line accepts) is a `Catalogue`, reached through the pin's family.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import UsageError

FAMILIES_DIR = Path(__file__).parent / "families"


def _catalogue_files() -> list[Path]:
    return sorted(FAMILIES_DIR.glob("*/catalogue.json"))


def _load() -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    ids: dict[str, int] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for path in _catalogue_files():
        for t in json.loads(path.read_text())["types"]:
            if ids.setdefault(t["name"], t["id"]) != t["id"]:
                raise RuntimeError(f"{path}: ggml type {t['name']} has id {t['id']}, another family says "
                                   f"{ids[t['name']]}")
            sizes[t["name"]] = (t["block"], t["bytes"])
    return ids, sizes


_IDS, _SIZES = _load()
T = enum.IntEnum("GGMLType", sorted(_IDS.items(), key=lambda kv: kv[1]), module=__name__)
T.__doc__ = "A ggml tensor type (id as in ggml.h), over every pin family's types."
SIZES: dict[T, tuple[int, int]] = {T[n]: s for n, s in _SIZES.items()}

UNQUANTIZED = frozenset({T.F32, T.F16, T.BF16})
# Integer types and the dot-product-only types: never a target of llama-quantize's type choice.
_NOT_TARGETS = frozenset(n for n in ("I8", "I16", "I32", "I64", "F64", "Q8_1", "Q8_K") if n in T.__members__)


def block_size(t: T) -> int:
    return SIZES[t][0]


def type_bytes(t: T) -> int:
    """Bytes per block (per element for F32/F16/BF16)."""
    return SIZES[t][1]


def row_bytes(t: T, n: int) -> int:
    return n // block_size(t) * type_bytes(t)


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
