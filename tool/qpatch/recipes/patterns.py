"""The regexes export writes: the fewest groups of tensor kinds that can share one block set, and a
pattern for a set of block numbers that avoids the blocks it must not match (digit ranges, merged
character classes), as short as the search finds. Pure string work, proven by tests/test_export.py.
"""

from __future__ import annotations

import re


def group_kinds(req: dict[str, set[int]], forbid: dict[str, set[int]], budget: int = 20000) -> list[list[str]]:
    """Fewest groups of kinds that can share one block set (a minimum clique cover, by search).

    Two kinds are compatible when neither needs a block the other forbids; a group of pairwise
    compatible kinds can share the union of their needed blocks.
    """
    kinds = sorted(req, key=lambda k: (-len(req[k]), k))
    best: list[list[list[str]]] = []
    calls = 0

    def fits(group, k):
        return all(not (req[k] & forbid[g]) and not (req[g] & forbid[k]) for g in group)

    def search(i: int, groups: list[list[str]]):
        nonlocal calls
        calls += 1
        if best and (len(groups) >= len(best[0]) or calls > budget):
            return
        if i == len(kinds):
            best[:] = [[sorted(g) for g in groups]]
            return
        k = kinds[i]
        for g in groups:
            if fits(g, k):
                g.append(k)
                search(i + 1, groups)
                g.pop()
        groups.append([k])
        search(i + 1, groups)
        groups.pop()

    search(0, [])
    return sorted(best[0])


def _lit(s: str) -> str:
    """`s` as a regex literal that llama-quantize's lowercasing leaves intact (uppercase as \\xNN)."""
    return "".join(f"\\x{ord(c):02x}" if c != c.lower() else re.escape(c) for c in s)


def alternation(words: list[str]) -> str:
    """`a` or `(a|b)`, with a common prefix/suffix ending/starting at `_` or `.` factored out."""
    words = sorted(set(words))
    if len(words) == 1:
        return _lit(words[0])
    pre = _common(words)
    pre = pre[: max(pre.rfind("_"), pre.rfind(".")) + 1]
    rest = [w[len(pre):] for w in words]
    suf = _common([w[::-1] for w in rest])[::-1]
    cut = [i for i, c in enumerate(suf) if c in "_."]
    suf = suf[cut[0]:] if cut else ""
    mids = [w[: len(w) - len(suf)] for w in rest]
    if not all(mids):
        pre, suf, mids = "", "", words
    return f"{_lit(pre)}({'|'.join(_lit(m) for m in mids)}){_lit(suf)}"


def _common(words: list[str]) -> str:
    first, last = min(words), max(words)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def blocks_pattern(need: set[int], bad: set[int]) -> str:
    """A regex for block numbers matching every number in `need` and none in `bad`, short."""
    bad_sorted = sorted(bad)
    runs: dict[tuple[int, int | None], list[int]] = {}
    for b in sorted(need):
        lo = max((f for f in bad_sorted if f < b), default=-1) + 1
        hi = min((f for f in bad_sorted if f > b), default=None)
        runs.setdefault((lo, None if hi is None else hi - 1), []).append(b)
    parts: list[str] = []
    for (rlo, rhi), bs in runs.items():
        parts += _best_range(bs[0], bs[-1], rlo, rhi)
    parts = _merge_classes(parts)
    if len(parts) == 1 and "|" not in parts[0]:
        return parts[0]
    return f"({'|'.join(parts)})"


def _best_range(a: int, b: int, rlo: int, rhi: int | None) -> list[str]:
    """The shortest regex for some [lo, hi] with rlo <= lo <= a and b <= hi <= rhi (None: unbounded)."""
    los, his = {a, rlo}, {b, rhi}
    for k in (1, 2, 3):
        if a - a % 10 ** k >= rlo:
            los.add(a - a % 10 ** k)  # down to a round number: 10, 20, 100 ...
        up = (b // 10 ** k + 1) * 10 ** k - 1
        if rhi is None or up <= rhi:
            his.add(up)  # up to 19, 29, 99 ...
    cands = []
    for lo in los:
        for hi in his:
            p = range_pattern(lo, hi)
            span = (10 ** 9 if hi is None else hi) - lo
            cands.append((len("|".join(p)), len(p), span, lo, p))
    return min(cands, key=lambda c: c[:4])[4]


def range_pattern(lo: int, hi: int | None) -> list[str]:
    """Alternatives matching exactly the decimal numbers lo..hi (no leading zeros); hi None: no end."""
    if hi is None:
        if lo == 0:
            return [r"\d+"]
        d = len(str(lo))
        if lo == 10 ** (d - 1):
            return [_digits_at_least(d)]
        return range_pattern(lo, 10 ** d - 1) + [_digits_at_least(d + 1)]
    out = []
    for d in range(len(str(lo)), len(str(hi)) + 1):
        a = max(lo, 10 ** (d - 1) if d > 1 else 0)
        b = min(hi, 10 ** d - 1)
        if a <= b:
            out += _same_width(str(a), str(b))
    return out


def _digits_at_least(d: int) -> str:
    """Numbers of d or more digits, no leading zero (no `{d,}`: a comma would split a --custom-q list)."""
    return "[1-9]" + (r"\d*" if d == 1 else r"\d" * (d - 2) + r"\d+")


def _same_width(lo: str, hi: str) -> list[str]:
    if lo == hi:
        return [lo]
    n = len(lo)
    if n == 1:
        return [_class(lo, hi)]
    if lo[0] == hi[0]:
        return [lo[0] + p for p in _same_width(lo[1:], hi[1:])]
    low_full, high_full = lo[1:] == "0" * (n - 1), hi[1:] == "9" * (n - 1)
    out = [] if low_full else [lo[0] + p for p in _same_width(lo[1:], "9" * (n - 1))]
    first = int(lo[0]) + (0 if low_full else 1)
    last = int(hi[0]) - (0 if high_full else 1)
    if first <= last:
        out.append(_class(str(first), str(last)) + r"\d" * (n - 1))
    if not high_full:
        out += [hi[0] + p for p in _same_width("0" * (n - 1), hi[1:])]
    return out


def _class(a: str, b: str) -> str:
    if a == b:
        return a
    if (a, b) == ("0", "9"):
        return r"\d"
    return f"[{a}{b}]" if int(b) == int(a) + 1 else f"[{a}-{b}]"


_LAST_DIGIT = re.compile(r"^([0-9]*)([0-9]|\[[0-9-]+\]|\\d)$")


def _merge_classes(parts: list[str]) -> list[str]:
    """`3|5|[89]` -> `[3589]`, `13|1[5-7]` -> `1[35-7]`: alternatives differing only in the last digit merge."""
    last: dict[str, set[int]] = {}
    entries: list[tuple[bool, str]] = []  # (merged?, prefix digits or the part as is)
    for p in parts:
        m = _LAST_DIGIT.match(p)
        if not m:
            entries.append((False, p))
            continue
        prefix, cls = m.groups()
        if prefix not in last:
            last[prefix] = set()
            entries.append((True, prefix))
        last[prefix] |= _digit_set(cls)
    return [p + _digit_class(last[p]) if merged else p for merged, p in entries]


def _digit_set(cls: str) -> set[int]:
    if cls == r"\d":
        return set(range(10))
    body = cls.strip("[]")
    out = set()
    for m in re.finditer(r"([0-9])(?:-([0-9]))?", body):
        out |= set(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    return out


def _digit_class(digits: set[int]) -> str:
    if len(digits) == 10:
        return r"\d"
    if len(digits) == 1:
        return str(next(iter(digits)))
    runs: list[list[int]] = []
    for d in sorted(digits):
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    body = "".join(f"{r[0]}-{r[-1]}" if len(r) >= 3 else "".join(map(str, r)) for r in runs)
    return f"[{body}]"
