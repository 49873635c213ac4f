"""eval/sweep results as a readable table, JSON or CSV, and as a plot of size against mean KLD.

Both commands hand over the same rows (dicts: `Row.as_dict()` plus `name`, and for a sweep's
failed jobs `status`/`error`), so one renderer serves both.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

COLUMNS = (  # (header, key, format)
    ("quant", "name", "{}"), ("policy", "policy", "{}"), ("ftype", "ftype", "{}"),
    ("MiB", "size_mib", "{:.2f}"), ("bpw", "bpw", "{:.3f}"), ("PPL", "ppl", "{:.4f}"),
    ("PPL/base", "ppl_ratio", "{:.4f}"), ("mean KLD", "kld_mean", "{:.5f}"), ("median KLD", "kld_median", "{:.5f}"),
    ("p99 KLD", "kld_p99", "{:.5f}"), ("same top %", "same_top", "{:.2f}"),
)
CSV_FIELDS = ("name", "policy", "ftype", "pin", "path", "size_bytes", "params", "bpw", "ppl", "ppl_unc", "ppl_base",
              "ppl_ratio", "ln_ppl_ratio", "kld_mean", "kld_unc", "kld_median", "kld_p99", "kld_max", "same_top",
              "same_top_unc", "rms_dp", "status", "error")


def _cell(row: dict, key: str, fmt: str) -> str:
    if key == "size_mib":
        return fmt.format(row["size_bytes"] / 2**20) if "size_bytes" in row else "-"
    v = row.get(key)
    return "-" if v is None else fmt.format(v)


def table(base: dict, rows: list[dict]) -> str:
    """Aligned columns; failed rows name their error below the table."""
    head = [h for h, _, _ in COLUMNS]
    body = [[_cell(r, k, f) for _, k, f in COLUMNS] for r in rows if r.get("status", "ok") == "ok"]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    right = [i >= 3 for i in range(len(head))]

    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    out = [f"base: {base['name']}  {base['size_bytes'] / 2**20:.2f} MiB  {base['bpw']:.3f} bpw  "
           f"PPL {base['ppl']:.4f} ± {base['ppl_unc']:.4f}", "", line(head), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    failed = [r for r in rows if r.get("status", "ok") != "ok"]
    if failed:
        out += ["", f"{len(failed)} job(s) failed:"]
        out += [f"  {r['name']}: {r['error'].splitlines()[0] if r.get('error') else r['status']}" for r in failed]
    return "\n".join(out)


def to_json(base: dict, rows: list[dict], extra: dict | None = None) -> str:
    return json.dumps({**(extra or {}), "base": base, "quants": rows}, indent=2, sort_keys=True)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({"status": "ok", **r})
    return buf.getvalue()


def pareto(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both size and mean KLD, smallest first."""
    ok = sorted((r for r in rows if r.get("status", "ok") == "ok"), key=lambda r: (r["size_bytes"], r["kld_mean"]))
    front, best = [], float("inf")
    for r in ok:
        if r["kld_mean"] < best:
            front.append(r)
            best = r["kld_mean"]
    return front


def require_plotting() -> None:
    """--plot needs matplotlib, an optional extra: say so before any work starts, not after it."""
    import importlib.util

    from qpatch.errors import UsageError

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib, which is not installed", hint="pip install 'qpatch[plot]'")


def plot(base: dict, rows: list[dict], path: str | Path, title: str | None = None) -> Path:
    """Size (MiB) against mean KLD (log scale), a labelled point per quant, a colour and marker per policy;
    the Pareto front drawn as a step line."""
    require_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    policies = sorted({r["policy"] for r in ok})
    colours = {p: plt.get_cmap("tab10")(i % 10) for i, p in enumerate(policies)}
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    markers = "osD^vP*X"
    for i, p in enumerate(policies):  # a marker and size per policy: policies that agree stay visible, nested
        pts = [r for r in ok if r["policy"] == p]
        ax.scatter([r["size_bytes"] / 2**20 for r in pts], [max(r["kld_mean"], 1e-6) for r in pts], label=p,
                   facecolors="none", edgecolors=[colours[p]], marker=markers[i % len(markers)],
                   s=max(110 - 25 * i, 20), linewidths=1.5, zorder=3)
        for r in pts:
            ax.annotate(r["ftype"], (r["size_bytes"] / 2**20, max(r["kld_mean"], 1e-6)), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=colours[p])
    front = pareto(ok)
    if front:
        ax.step([r["size_bytes"] / 2**20 for r in front], [max(r["kld_mean"], 1e-6) for r in front], where="post",
                color="black", linewidth=1, linestyle="--", label="Pareto front", zorder=2)
    ax.set_yscale("log")
    ax.set_xlabel("size of the quantized model (MiB)")
    ax.set_ylabel("mean KL divergence from the base (log scale)")
    ax.set_title(title or f"quality per size against {base['name']} (PPL {base['ppl']:.3f})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
