"""`qpatch fit`: one type per group, the least summed ΔKLD within a size budget, exactly.

A multiple-choice knapsack solved by dynamic programming over Pareto fronts: after each group, keep every
reachable (bytes, ΔKLD) that no other reachable mix beats on both, and drop what is over the budget. The
last front's best point under the budget is the optimum (no rounding of bytes: sizes are exact). With a
GPU and a CPU budget (tensors matching the offload pattern count against the CPU, as `-ot exps=CPU` puts
them), the fronts are over (GPU bytes, CPU bytes, ΔKLD); when no group straddles the two, the problem is
two independent knapsacks and is solved as such.

Also here: greedy selection by ΔKLD per byte (what exllamav3 and others do), for comparison.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qpatch.errors import UsageError
from qpatch.measure.table import GroupRow, Table


@dataclass(frozen=True)
class Item:
    """One option of one group as the solver sees it."""

    type: str
    gpu: int  # bytes counted against the first budget (all bytes, with a single budget)
    cpu: int  # bytes counted against the second budget (0 with a single budget)
    cost: float  # ΔKLD


@dataclass(frozen=True)
class Fit:
    choice: dict  # group -> type
    bytes: int
    gpu_bytes: int
    cpu_bytes: int
    dkld_sum: float
    at_max: bool  # the budget holds even the largest mix: this is it


def items(table: Table, offload: str | None = None) -> list[tuple[GroupRow, list[Item]]]:
    try:
        rx = re.compile(offload) if offload else None
    except re.error as e:
        raise UsageError(f"--offload {offload}: not a regular expression ({e})") from None
    out = []
    for g in table.groups():
        opts = []
        on_cpu = [bool(rx and rx.search(n)) for n in g.tensors]
        for t, o in sorted(g.options.items()):
            if rx is None:
                opts.append(Item(t, o.bytes, 0, o.dkld))
                continue
            # the split of a group's bytes between GPU and CPU: per tensor, from its share of the group
            cpu = o.bytes if all(on_cpu) else 0 if not any(on_cpu) else None
            if cpu is None:
                raise UsageError(f"--offload {offload}: group {g.name} is split between CPU and GPU tensors",
                                 hint="measure with groups that keep offloaded kinds apart (the default bands:N does)")
            opts.append(Item(t, o.bytes - cpu, cpu, o.dkld))
        out.append((g, opts))
    return out


def _front(groups: list[list[Item]], cap: int) -> list[tuple[int, float, tuple[int, ...]]]:
    """Pareto DP over one resource: the final front as sorted (bytes, cost, option index per group).

    Each step forms every (point, option) sum within `cap`, sorts by bytes then cost, and keeps a point only
    if it is strictly cheaper than every point of fewer or equal bytes; back-pointers recover the choice."""
    import numpy as np

    b = np.zeros(1, dtype=np.int64)
    c = np.zeros(1, dtype=np.float64)
    trail = []  # per group: (parent index, option index) of each kept point
    for opts in groups:
        # an option another beats on both bytes and cost is never in an optimum: drop it (exact)
        order_o = sorted(range(len(opts)), key=lambda i: (opts[i].gpu, opts[i].cost))
        keep_o, best_c = [], float("inf")
        for i in order_o:
            if opts[i].cost < best_c:
                keep_o.append(i)
                best_c = opts[i].cost
        ids = np.array(keep_o, dtype=np.int64)
        ob = np.array([opts[i].gpu for i in keep_o], dtype=np.int64)
        oc = np.array([opts[i].cost for i in keep_o], dtype=np.float64)
        nb = (b[:, None] + ob[None, :]).ravel()
        nc = (c[:, None] + oc[None, :]).ravel()
        ok = np.nonzero(nb <= cap)[0]
        if ok.size == 0:
            return []
        order = ok[np.lexsort((nc[ok], nb[ok]))]
        sc = nc[order]
        prev = np.minimum.accumulate(np.concatenate(([np.inf], sc[:-1])))
        keep = order[sc < prev]
        b, c = nb[keep], nc[keep]
        trail.append((keep // len(keep_o), ids[keep % len(keep_o)]))
    out = []
    for k in range(len(b)):
        ch, i = [], k
        for parent, opt in reversed(trail):
            ch.append(int(opt[i]))
            i = int(parent[i])
        out.append((int(b[k]), float(c[k]), tuple(reversed(ch))))
    return out


def _best(front):
    """The cheapest point; of equally cheap ones the smallest (the front has one per cost anyway)."""
    return min(front, key=lambda x: (x[1], x[0]))


def solve(table: Table, *, size: int | None = None, gpu: int | None = None, cpu: int | None = None,
          offload: str | None = None) -> Fit:
    rows = items(table, offload if gpu is not None else None)
    opts = [o for _, o in rows]
    names = [g.name for g, _ in rows]
    if gpu is None:
        assert size is not None, "solve() needs size, or gpu and cpu"
        lo = sum(min(it.gpu for it in o) for o in opts)
        hi = sum(max(it.gpu for it in o) for o in opts)
        if size < lo:
            raise UsageError(f"a budget of {size:,} bytes is below the smallest mix the table allows: {lo:,} bytes "
                             f"({lo / 2**30:.3f} GiB)", hint="shelve and measure smaller types, or raise the budget")
        if size >= hi:  # the budget holds the largest mix: take it (every group's largest option)
            big = [max(o, key=lambda it: (it.gpu, -it.cost)) for o in opts]
            return Fit({n: it.type for n, it in zip(names, big)}, hi, hi, 0, sum(it.cost for it in big), at_max=True)
        b, c, ch = _best(_front(opts, size))
        return Fit({n: o[i].type for n, o, i in zip(names, opts, ch)}, b, b, 0, c, at_max=False)
    # two budgets: tensors on the GPU and tensors on the CPU
    gpu_groups = [i for i, o in enumerate(opts) if all(it.cpu == 0 for it in o)]
    cpu_groups = [i for i, o in enumerate(opts) if all(it.gpu == 0 for it in o)]
    both = [i for i in range(len(opts)) if i not in gpu_groups and i not in cpu_groups]
    if both:  # never, given items() refuses straddling groups; kept for a table of mixed groups
        raise UsageError("groups straddle the two budgets")
    chosen: dict[int, int] = {}
    totals = []
    for idx, cap, key in ((gpu_groups, gpu, "gpu"), (cpu_groups, cpu, "cpu")):
        assert cap is not None, "solve() needs both gpu and cpu"
        sub = [[Item(it.type, getattr(it, key), 0, it.cost) for it in opts[i]] for i in idx]
        lo = sum(min(it.gpu for it in o) for o in sub)
        if cap < lo:
            raise UsageError(f"a {key.upper()} budget of {cap:,} bytes is below the smallest {key.upper()} share the "
                             f"table allows: {lo:,} bytes ({lo / 2**30:.3f} GiB)")
        b, c, ch = _best(_front(sub, cap))
        chosen.update(dict(zip(idx, ch)))
        totals.append((b, c, sum(max(it.gpu for it in o) for o in sub) <= cap))
    choice = {names[i]: opts[i][chosen[i]].type for i in range(len(opts))}
    (gb, gc, gmax), (cb, cc, cmax) = totals
    return Fit(choice, gb + cb, gb, cb, gc + cc, at_max=gmax and cmax)


def greedy(table: Table, size: int) -> Fit:
    """Start from the smallest option of every group; repeatedly take the upgrade with the most ΔKLD saved
    per byte that still fits (the usual heuristic, for comparison with the exact fit)."""
    rows = items(table)
    cur = {g.name: min(o, key=lambda it: (it.gpu, it.cost)) for g, o in rows}
    by = {g.name: o for g, o in rows}
    total = sum(it.gpu for it in cur.values())
    if total > size:
        raise UsageError(f"a budget of {size:,} bytes is below the smallest mix the table allows: {total:,} bytes")
    while True:
        best = None
        for name, it in cur.items():
            for alt in by[name]:
                db, dc = alt.gpu - it.gpu, it.cost - alt.cost
                if db > 0 and dc > 0 and total + db <= size:
                    score = dc / db
                    if best is None or score > best[0]:
                        best = (score, name, alt, db)
        if best is None:
            break
        _, name, alt, db = best
        cur[name] = alt
        total += db
    cost = sum(it.cost for it in cur.values())
    return Fit({n: it.type for n, it in cur.items()}, total, total, 0, cost, at_max=False)


_SIZE = re.compile(r"^\s*([\d.]+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20, "mb": 10**6,
          "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40, "tb": 10**12}


def parse_size(text: str, what: str = "--size") -> int:
    """`24GiB`, `24G` (binary), `24GB` (decimal), `123456789` (bytes)."""
    m = _SIZE.match(str(text))
    if not m:
        raise UsageError(f"{what} {text}: expected a size such as 24GiB, 900MiB, 25GB or a byte count")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
