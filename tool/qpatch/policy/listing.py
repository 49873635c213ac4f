"""Human-readable views of policies for `qpatch list` and `qpatch show`."""

from __future__ import annotations

from collections.abc import Sequence

from qpatch.errors import PolicyError
from qpatch.policy import loader


def _table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]], wrap: dict[int, int] | None = None) -> str:
    """Aligned columns; a column in `wrap` (index -> width) is wrapped onto continuation lines."""
    import textwrap

    cells = []
    for r in rows:
        parts = [textwrap.wrap(c, (wrap or {}).get(i, 10**6), break_on_hyphens=False,
                                break_long_words=False) or [""] for i, c in enumerate(r)]
        height = max(len(p) for p in parts)
        cells += [tuple(p[k] if k < len(p) else "" for p in parts) for k in range(height)]
    widths = [max(len(r[i]) for r in cells + [head]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def list_table() -> tuple[str, list[PolicyError]]:
    """The policies as a table; one that does not load is listed with its error (file:line), not hidden."""
    rows, broken = [], []
    for name in loader.available():
        try:
            p = loader.load(name)
        except PolicyError as e:
            broken.append(e)
            rows.append((name, "-", "-", f"BROKEN: {e}"))
            continue
        where = loader.located(name)
        summary = p.summary + (f" [{where}]" if where else "")
        rows.append((p.name, ",".join(p.archs) or "any", str(len(p.rules)), summary))
    return _table(("policy", "archs", "rules", "summary"), rows), broken


def show(name: str) -> str:
    p = loader.load(name)
    rows = []
    for i, r in enumerate(p.rules, 1):
        rows.append((str(i), r.select.describe(), r.describe_when(), r.then.describe(), r.source))
    out = [f"{p.name}: {p.summary}",
           f"file: {p.source}   hash: {p.content_hash}   archs: {','.join(p.archs) or 'any'}", ""]
    # fits 120 columns: long selectors, conditions and ftype tables wrap onto continuation lines
    out.append(_table(("#", "tensors", "when", "type", "rule"), rows, wrap={1: 22, 2: 44, 3: 18})
               if rows else "(no rules: stock's choices)")
    out.append("")
    if p.fallback is None:
        out.append("shape fallback: stock's table")
    else:
        import textwrap

        out += textwrap.wrap("shape fallback: " + ", ".join(f"{a.name}->{b.name}" for a, b in p.fallback), 118,
                             subsequent_indent="    ")
    missing = "abort (stock)" if p.missing_imatrix == "abort" else "quantize to Q8_0"
    mismatch = "abort (stock)" if p.imatrix_mismatch == "abort" else "ignore it"
    out.append(f"missing imatrix entry for a very-low-bit tensor: {missing}")
    out.append(f"imatrix entry of the wrong length: {mismatch}")
    return "\n".join(out)
