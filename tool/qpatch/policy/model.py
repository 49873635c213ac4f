"""The frozen policy data model: rules = selector + conditions + action, composed into policies.

Nothing here knows about C++ or about llama.cpp's stock code. `predict/rules.py` gives these
objects their Python meaning and `render.py` their C++ meaning; both dispatch on the class,
so a new predicate needs a case in each (and the differential tests prove they agree).

Position predicates read a frame:
- `Block()`: k = the block index i from `blk.<i>.`, N = the model's block count.
- `Ordinal(kinds, n)`: k = how many tensors of `kinds` came before this one in llama.cpp's
  processing order (all tensors of the model, quantized or not), N = how many the model has,
  or the block count when `n="blocks"`. `kinds=None` means the tensor's own kind.
A tensor outside a frame's kinds (or without a block, for `Block`) has no position there:
every position predicate on it is false.
"""

from __future__ import annotations

import enum
import os
import re
import sys
import typing
from dataclasses import dataclass
from typing import ClassVar, Union

from qpatch.errors import PolicyError
from qpatch.gguf.catalogue import T

# ----------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Block:
    def describe(self) -> str:
        return "block i/n"


@dataclass(frozen=True)
class Ordinal:
    kinds: tuple[str, ...] | None = None
    n: str = "count"  # "count" | "blocks"

    def __post_init__(self):
        if self.n not in ("count", "blocks"):
            raise PolicyError(f"Ordinal n must be 'count' or 'blocks', not {self.n!r}")
        if self.kinds is not None and not (isinstance(self.kinds, tuple) and self.kinds
                                           and all(isinstance(k, str) and k for k in self.kinds)):
            raise PolicyError(f"Ordinal kinds must be a non-empty tuple of tensor kinds, not {self.kinds!r}")

    def describe(self) -> str:
        who = "own kind" if self.kinds is None else "+".join(self.kinds)
        return f"ordinal in {who}" + (", N=blocks" if self.n == "blocks" else "")


Frame = Union[Block, Ordinal]


# ------------------------------------------------------------------------- conditions


def _frac(num: int, den: int) -> str:
    return f"N/{den}" if num == 1 else f"{num}N/{den}"


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_frame(who: str, frame) -> None:
    if not isinstance(frame, (Block, Ordinal)):
        raise PolicyError(f"{who}: the frame must be Block() or Ordinal(...), not {frame!r}")


def _check_fraction(c) -> None:
    """Before/AtLeast/After(num, den, frame): a fraction num/den of N, in a frame."""
    who = f"{type(c).__name__}({c.num!r}, {c.den!r}, ...)"
    if not (_int(c.num) and _int(c.den)):
        raise PolicyError(f"{who}: num and den must be integers (a frame goes third: "
                          f"{type(c).__name__}(1, 8, Ordinal()))")
    if c.den <= 0 or c.num < 0:
        raise PolicyError(f"{who}: needs num >= 0 and den > 0")
    _check_frame(who, c.frame)


def _check_comparison(c) -> None:
    if c.op not in ("==", "!=", ">=", ">", "<=", "<"):
        raise PolicyError(f"{type(c).__name__} op must be a comparison, not {c.op!r}")
    if not _int(c.value):
        raise PolicyError(f"{type(c).__name__}({c.op!r}, {c.value!r}): the value must be an integer")


@dataclass(frozen=True)
class _Position:
    """k <symbol> num*N/den, k and N counted in `frame` (C integer division, as llama.cpp's tests)."""

    num: int
    den: int
    frame: Frame = Block()
    symbol: ClassVar[str] = ""

    def __post_init__(self):
        _check_fraction(self)

    def describe(self):
        return f"k {self.symbol} {_frac(self.num, self.den)} [{self.frame.describe()}]"


@dataclass(frozen=True)
class Before(_Position):
    """k < num*N/den."""

    symbol: ClassVar[str] = "<"


@dataclass(frozen=True)
class AtLeast(_Position):
    """k >= num*N/den."""

    symbol: ClassVar[str] = ">="


@dataclass(frozen=True)
class After(_Position):
    """k > num*N/den."""

    symbol: ClassVar[str] = ">"


@dataclass(frozen=True)
class UseMoreBits:
    """llama.cpp's use_more_bits(k, N): k < N/8 || k >= 7*N/8 || (k - N/8) % 3 == 2."""

    frame: Frame = Block()

    def __post_init__(self):
        _check_frame("UseMoreBits(...)", self.frame)

    def describe(self):
        return f"use_more_bits [{self.frame.describe()}]"


@dataclass(frozen=True)
class Experts:
    """n_expert <op> value, n_expert as the GGUF says (0 for dense models)."""

    op: str
    value: int

    def __post_init__(self):
        _check_comparison(self)

    def describe(self):
        return f"n_expert {self.op} {self.value}"


@dataclass(frozen=True)
class Gqa:
    op: str
    value: int

    def __post_init__(self):
        _check_comparison(self)

    def describe(self):
        return f"n_gqa {self.op} {self.value}"


@dataclass(frozen=True)
class Imatrix:
    present: bool = True

    def describe(self):
        return "imatrix" if self.present else "no imatrix"


@dataclass(frozen=True)
class Ftypes:
    names: tuple[str, ...]
    label: str = ""  # a group's name for tables, e.g. "low-bit"

    def describe(self):
        return f"{self.label} ftype" if self.label else "ftype in " + ",".join(self.names)


@dataclass(frozen=True)
class Arch:
    names: tuple[str, ...]

    def describe(self):
        return "arch in " + ",".join(self.names)


@dataclass(frozen=True)
class RowMultiple:
    """ne[0] % n == 0."""

    n: int

    def describe(self):
        return f"ne0 % {self.n} == 0"


@dataclass(frozen=True)
class Stacked:
    """ne[2] > 1 (an expert tensor)."""

    def describe(self):
        return "ne2 > 1"


@dataclass(frozen=True)
class Not:
    cond: "Cond"

    def describe(self):
        return f"not ({self.cond.describe()})"


@dataclass(frozen=True)
class AnyOf:
    conds: tuple["Cond", ...]

    def describe(self):  # parenthesised as a whole, so "A and (X or Y)" reads as it evaluates
        return "(" + " or ".join(c.describe() for c in self.conds) + ")"


@dataclass(frozen=True)
class AllOf:
    conds: tuple["Cond", ...]

    def describe(self):
        return "(" + " and ".join(c.describe() for c in self.conds) + ")"


Cond = Union[Before, AtLeast, After, UseMoreBits, Experts, Gqa, Imatrix, Ftypes, Arch, RowMultiple, Stacked, Not, AnyOf,
             AllOf]


# ---------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Set:
    type: T

    def describe(self):
        return self.type.name


@dataclass(frozen=True)
class ByFtype:
    """A table ftype -> type; `otherwise` None keeps stock's choice."""

    table: tuple[tuple[str, T], ...]
    otherwise: T | None = None

    def describe(self):
        parts = [f"{f}:{t.name}" for f, t in self.table]
        parts.append(f"else {self.otherwise.name if self.otherwise else 'stock'}")
        return "{" + ", ".join(parts) + "}"


@dataclass(frozen=True)
class Step:
    """Move stock's choice `by` steps along `ladder` (default: LADDER), clamped at its ends.

    A stock choice that is not on the ladder (Q2_K, Q3_K with the default one) is kept, and the plan
    says so beside the rule ("Step: stock's Q2_K is off the ladder, kept")."""

    by: int
    ladder: tuple[T, ...] = ()

    def __post_init__(self):
        if not isinstance(self.by, int) or isinstance(self.by, bool):
            raise PolicyError(f"Step({self.by!r}): the number of steps must be an integer")
        if not self.ladder:
            object.__setattr__(self, "ladder", LADDER)
        if len(set(self.ladder)) != len(self.ladder) or not all(isinstance(t, T) for t in self.ladder):
            raise PolicyError(f"Step: the ladder must be distinct ggml types, got {self.ladder!r}")

    def describe(self):
        return f"stock {'+' if self.by >= 0 else ''}{self.by} step(s)"


@dataclass(frozen=True)
class Default:
    """The ftype's default type (as if stock had no rule for this tensor)."""

    def describe(self):
        return "ftype default"


@dataclass(frozen=True)
class Keep:
    """Stock's choice, unchanged (ends the search: later rules are not consulted)."""

    def describe(self):
        return "stock"


Action = Union[Set, ByFtype, Step, Default, Keep]

LADDER: tuple[T, ...] = (
    T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ4_XS,
    T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_0,
)


# ------------------------------------------------------------------------------ rules


# The rule sites of stock type choice a selector may name (each family maps tensor names onto them).
STOCK_SITES = ("token_embd", "output", "attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "ffn_up", "ffn_gate",
               "ffn_down", "other")


@dataclass(frozen=True)
class Select:
    """Which tensors: exact kinds, a substring of the name, a regex searched in the name, or the tensors
    that one of stock's rule sites reaches on the pin (`stock="attn_v"`: every tensor stock's attn_v rules
    decide; on the b6700 family that is attn_v, on the current family attn_v, attn_qkv and attn_kv_b)."""

    kinds: tuple[str, ...] = ()
    contains: str | None = None
    pattern: str | None = None
    stock: str | None = None

    def __post_init__(self):
        given = sum(bool(x) for x in (self.kinds, self.contains, self.pattern, self.stock))
        if given != 1:
            raise PolicyError("a selector takes exactly one of kinds=, contains=, pattern=, stock=")
        if self.stock is not None and self.stock not in STOCK_SITES:
            raise PolicyError(f"Select(stock={self.stock!r}): stock's rule sites are {', '.join(STOCK_SITES)}")
        if self.pattern is not None:
            check_pattern(self.pattern)

    def describe(self):
        if self.kinds:
            return ",".join(self.kinds)
        if self.stock:
            return f"stock's {self.stock} site"
        if self.contains:
            return f"*{self.contains}*"
        return f"/{self.pattern}/"


# What Python's re takes and C++'s std::regex (ECMAScript grammar: the rendered code and llama-quantize
# match with it) refuses or reads otherwise; a pattern must mean the same in both.
_PYTHON_ONLY = (
    (re.compile(r"\(\?P[<=>]"), "named groups (?P...)"),
    (re.compile(r"\(\?<[=!]"), "lookbehind (?<=...) / (?<!...)"),
    (re.compile(r"\(\?<\w"), "named groups (?<name>...)"),
    (re.compile(r"\(\?[aiLmsux-]+[:)]"), "inline flags such as (?i)"),
    (re.compile(r"\(\?[#>]"), "comments (?#...) and atomic groups (?>...)"),
    (re.compile(r"\\[AZz]"), "\\A, \\Z and \\z (use ^ and $)"),
    (re.compile(r"[*+?}][+]"), "possessive quantifiers (*+, ++, ?+)"),
)


def check_pattern(pattern: str) -> None:
    """A tensor-name regex that both Python's re and C++'s std::regex (ECMAScript) read alike."""
    try:
        re.compile(pattern)
    except re.error as e:
        raise PolicyError(f"Select(pattern={pattern!r}): not a valid regex: {e}") from None
    unescaped = re.sub(r"\\[^AZz]", "", pattern)  # escaped characters are literals in both grammars
    for rx, what in _PYTHON_ONLY:
        if rx.search(unescaped):
            raise PolicyError(f"Select(pattern={pattern!r}): {what} are Python's alone; C++'s std::regex "
                              "(ECMAScript), which llama-quantize uses, refuses or reads them otherwise")


@dataclass(frozen=True)
class Rule:
    select: Select
    when: tuple[Cond, ...]
    then: Action
    source: str  # "policies/<file>.py:<line>"
    note: str = ""

    def describe_when(self) -> str:
        return " and ".join(c.describe() for c in self.when) or "always"


@dataclass(frozen=True)
class Policy:
    name: str
    summary: str
    rules: tuple[Rule, ...]
    archs: tuple[str, ...] = ()  # empty: every architecture
    pins: tuple[str, ...] = ()  # empty: every pin
    # pin families whose stock the rules are written against (empty: every family); on a pin of another
    # family the policy keeps stock's choices, and plan/render say so
    families: tuple[str, ...] = ()
    # shape fallback: (from, to) pairs that override stock's table entries; None: stock's table.
    fallback: tuple[tuple[T, T], ...] | None = None
    missing_imatrix: str = "abort"  # "abort" (stock) | "q8_0"
    imatrix_mismatch: str = "abort"  # "abort" (stock) | "ignore"
    description: str = ""
    source: str = ""  # policies/<file>.py
    content_hash: str = ""
    directory: str = ""  # where it was found (the loader sets it; not part of the hash)

    def __post_init__(self):  # the loader names the file and line of the Policy(...) that fails here
        if self.missing_imatrix not in ("abort", "q8_0"):
            raise PolicyError(f"missing_imatrix must be 'abort' or 'q8_0', not {self.missing_imatrix!r}")
        if self.imatrix_mismatch not in ("abort", "ignore"):
            raise PolicyError(f"imatrix_mismatch must be 'abort' or 'ignore', not {self.imatrix_mismatch!r}")
        if not isinstance(self.rules, tuple) or not all(isinstance(r, Rule) for r in self.rules):
            raise PolicyError("rules must be a tuple of rule(...)s")
        for name in ("archs", "pins", "families"):
            v = getattr(self, name)
            if not isinstance(v, tuple) or not all(isinstance(x, str) for x in v):
                example = "deepseek2" if name == "archs" else "NAME"
                raise PolicyError(f"{name} must be a tuple of strings, e.g. {name}=({example!r},)")
        if self.fallback is not None:
            entries = self.fallback if isinstance(self.fallback, tuple) else None
            for e in entries if entries is not None else [self.fallback]:
                if not (isinstance(e, tuple) and len(e) == 2 and all(isinstance(t, T) for t in e)):
                    got = (tuple(f"T.{t.name}" if isinstance(t, T) else repr(t) for t in e)
                           if isinstance(e, tuple) else e)
                    raise PolicyError(f"fallback entries are (T.FROM, T.TO) pairs of types, e.g. "
                                      f"((T.IQ4_NL, T.Q8_0),): got {got!r}".replace("'", ""))


# -------------------------------------------------------------------- building helpers


def _caller_source(depth: int = 2) -> str:
    # sys._getframe, not inspect.stack(): that reads source context for every frame on the
    # stack, ~0.3 s for the ~100 rules of deepseek-v3, on every `qpatch plan`.
    # `<directory name>/<file>:<line>`, wherever the directory lives: sources are in the hash and the C++
    frame = sys._getframe(depth)
    path = frame.f_code.co_filename
    return f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}:{frame.f_lineno}"



def rule(select: Select | str | tuple, then: Action | T, *when: Cond, note: str = "") -> Rule:
    """Build a rule recording the file:line of the call (the policy module's line)."""
    if isinstance(select, str):
        select = Select(kinds=(select,))
    elif isinstance(select, tuple):
        select = Select(kinds=select)
    if isinstance(then, enum.IntEnum) and type(then) is not T and then.name in T.__members__:
        then = T[then.name]  # a policy written against the gguf package's enum: the same type by name
    if isinstance(then, T):
        then = Set(then)
    for c in when:
        if not isinstance(c, typing.get_args(Cond)):
            raise PolicyError(f"{_caller_source()}: not a condition: {c!r}")
    if not isinstance(then, typing.get_args(Action)):
        raise PolicyError(f"{_caller_source()}: not an action: {then!r}")
    return Rule(select=select, when=tuple(when), then=then, source=_caller_source(), note=note)

