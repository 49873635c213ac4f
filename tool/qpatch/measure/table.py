"""The measurement table: for each tensor group and each shelved type, the exact bytes of the group at that
type and ΔKLD = KLD(baseline everywhere, the group at the type) - KLD(baseline everywhere), both against
the unquantized model on one text.

It records what it was measured from (content hashes of model, text and imatrix, the pin, the settings,
the baseline type and the groups with their tensors), so a re-run measures only what is missing and a
table of another model, text, pin or grouping is refused. It is written atomically after every job.

Uncertainty: llama-perplexity prints each mean KLD with its standard error over the text's positions;
both runs are over the same positions, so their errors are correlated and `dkld_unc` =
sqrt(unc_mix² + unc_baseline²) is an upper bound, not an estimate.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from qpatch.errors import ShelfError, UsageError

FORMAT = 1


@dataclass(frozen=True)
class Option:
    """One type for one group: its bytes, ΔKLD and its uncertainty (0 and 0 for the baseline)."""

    type: str
    bytes: int
    dkld: float
    dkld_unc: float
    types: dict  # the ggml types the group's tensors actually get (fallbacks) -> tensor count


@dataclass(frozen=True)
class GroupRow:
    name: str
    tensors: tuple[str, ...]
    options: dict  # type name -> Option (the baseline's included)


class Table:
    def __init__(self, data: dict, path: Path | None = None):
        self.data = data
        self.path = path

    # -- identity

    @property
    def identity(self) -> dict:
        return {k: self.data[k] for k in ("model", "text", "imatrix", "pin", "settings", "baseline", "grouping")}

    @property
    def baseline(self) -> str:
        return self.data["baseline"]

    @property
    def pin(self) -> str:
        return self.data["pin"]

    # -- contents

    def groups(self) -> list[GroupRow]:
        out = []
        for g in self.data["groups"]:
            opts = {t: Option(t, e["bytes"], e["dkld"], e["dkld_unc"], e.get("types", {}))
                    for t, e in g["options"].items() if e.get("dkld") is not None}
            out.append(GroupRow(g["name"], tuple(g["tensors"]), opts))
        return out

    def missing(self) -> list[tuple[str, str]]:
        """(group, type) jobs not measured yet ("*" for the baseline run)."""
        out = [] if self.data.get("baseline_kld") else [("*", self.baseline)]
        for g in self.data["groups"]:
            out += [(g["name"], t) for t, e in g["options"].items() if e.get("dkld") is None]
        return out

    def record_baseline(self, stats: dict):
        self.data["baseline_kld"] = stats
        for g in self.data["groups"]:  # ΔKLD of finished jobs measured before the baseline
            for e in g["options"].values():
                if e.get("kld") is not None and e.get("dkld") is None:
                    _fill(e, stats)

    def record(self, group: str, type_name: str, stats: dict):
        g = next(x for x in self.data["groups"] if x["name"] == group)
        e = g["options"][type_name]
        e.update(kld=stats["kld_mean"], kld_unc=stats["kld_unc"], seconds=stats.get("seconds"))
        if self.data.get("baseline_kld"):
            _fill(e, self.data["baseline_kld"])

    def total_bytes(self, choice: dict) -> int:
        return sum(g.options[choice[g.name]].bytes for g in self.groups())

    # -- files

    def save(self, path: Path | None = None):
        path = Path(path or self.path or "")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise UsageError(f"cannot write {path}: {e.strerror}") from None
        self.path = path

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["group", "type", "bytes", "dkld", "dkld_unc", "tensors", "actual_types"])
        for g in self.groups():
            for t, o in sorted(g.options.items(), key=lambda kv: kv[1].bytes):
                w.writerow([g.name, t, o.bytes, f"{o.dkld:.6g}", f"{o.dkld_unc:.3g}", len(g.tensors),
                            " ".join(f"{k}:{v}" for k, v in sorted(o.types.items()))])
        return buf.getvalue()


def _fill(e: dict, base: dict):
    e["dkld"] = e["kld"] - base["kld_mean"]
    e["dkld_unc"] = math.sqrt(e["kld_unc"] ** 2 + base["kld_unc"] ** 2)


def load(path) -> Table:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such table",
                         hint="make one: qpatch measure MODEL --shelves DIR --text FILE --out TABLE")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise UsageError(f"{path}: not a measurement table ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "groups" not in data:
        raise UsageError(f"{path}: not a qpatch measurement table (format {FORMAT})")
    return Table(data, path)


def check_same(table: Table, identity: dict, where) -> None:
    """Refuse a table measured from other inputs, naming what differs."""
    diffs = []
    for key, want in identity.items():
        have = table.identity.get(key)
        h = have.get("sha256") if isinstance(have, dict) and "sha256" in have else have
        n = want.get("sha256") if isinstance(want, dict) and "sha256" in want else want
        if h != n:
            diffs.append(f"{key}: the table has {_show(have)}, this run {_show(want)}")
    if diffs:
        raise ShelfError(f"{where} was measured from other inputs: " + "; ".join(diffs),
                         hint="measure into another --out file, or remove the table")


def _show(x) -> str:
    if isinstance(x, dict) and "sha256" in x:
        return f"{x.get('path')} (sha256 {x['sha256'][:12]})"
    return json.dumps(x, sort_keys=True) if isinstance(x, dict) else str(x)
