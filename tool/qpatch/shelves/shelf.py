"""Shelves: a model quantized once per candidate type, each kept as a split model of one group per shard.

A shelf set is a directory:

    DIR/shelves.json            what every shelf was made from (model, imatrix, pin, binary: sha256 each),
                                the groups and the processing order of the tensors
    DIR/<TYPE>/index.json       each tensor's type in that shelf (the type asked for, or what the pin's
                                fallback wrote instead), its shard, offset and size; written last
    DIR/<TYPE>/shelf-0000i-of-0000N.gguf
                                shard 1: the metadata llama-quantize wrote, no tensor; shard i+1: group i

Each shelf is one real run of the checkout's llama-quantize, every quantizable tensor asked for the type
(the family's override flag, `.*=TYPE`, less the tensors the plan says the run would abort on), then
verified against qpatch's prediction of that same job before it is split and kept. A shelf is made in a
temporary directory and renamed into place with its index, so an interrupted run leaves nothing that a
later one trusts, and a later run with the same inputs keeps what is there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from qpatch.build import cmake
from qpatch.checkout.repo import Checkout
from qpatch.codegen import render
from qpatch.errors import BuildError, ModelError, QuantizeError, ShelfError, UsageError
from qpatch.gguf import writer
from qpatch.gguf.catalogue import T, decode_type, tensor_bytes
from qpatch.gguf.header import SPLIT_RE, read_layout
from qpatch.job import Job
from qpatch.policy import loader
from qpatch.progress import SILENT, Progress
from qpatch.quality.content import content_hash, file_hash
from qpatch.quantize import runner
from qpatch.quantize.verify import compare, report
from qpatch.shelves.groups import DEFAULT_SPEC, Group, make_groups, parse_ties

FORMAT = 1
MANIFEST = "shelves.json"
INDEX = "index.json"
SHELF_FTYPE = "Q8_0"  # the ftype shelf runs are given: its default type is quantized, it needs no imatrix


def shard_name(i: int, n: int, prefix: str = "shelf") -> str:
    return f"{prefix}-{i:05d}-of-{n:05d}.gguf"


@dataclass(frozen=True)
class Where:
    """One tensor's bytes at one type: the ggml id as stored, the file, the absolute offset, the size."""

    type: T
    type_id: int
    path: Path
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Shelf:
    type: T
    dir: Path
    tensors: dict  # name -> Where
    shard_of: dict  # name -> shard number (1-based group shard; 0 is the metadata shard)
    fell_back: tuple[str, ...]  # tensors this shelf holds at another type (the pin's fallback)
    n_shards: int

    def shard_path(self, i: int) -> Path:
        return self.dir / shard_name(i + 1, self.n_shards)


@dataclass(frozen=True)
class ShelfSet:
    dir: Path
    manifest: dict
    groups: tuple[Group, ...]
    shelves: dict  # T -> Shelf

    @property
    def order(self) -> list[str]:
        return self.manifest["order"]

    @property
    def n_shards(self) -> int:
        return len(self.groups) + 1

    @property
    def pin(self) -> str:
        return self.manifest["pin"]

    def metadata_shard(self) -> Path:
        """Shard 1 of some shelf: the key/values llama-quantize wrote (they differ between shelves only in
        general.file_type, which assemble sets)."""
        first = self.shelves[sorted(self.shelves, key=lambda t: t.name)[0]]
        return first.shard_path(0)


# ------------------------------------------------------------------------------------------- identity


def identity(model, imatrix, pin: str, binary: Path | None) -> dict:
    out = {"model": {"path": str(model), "sha256": content_hash(model)},
           "imatrix": {"path": str(imatrix), "sha256": file_hash(imatrix)} if imatrix else None,
           "pin": pin}
    if binary is not None:
        out["binary"] = {"path": str(binary), "sha256": file_hash(binary)}
    return out


def check_same(manifest: dict, want: dict, where: Path, *, what: str = "these shelves"):
    """Refuse shelves made from another model, imatrix, pin or binary, naming each difference."""
    diffs = []
    for key in ("model", "imatrix", "pin", "binary"):
        if key not in want:
            continue
        have, new = manifest.get(key), want[key]
        h = have.get("sha256") if isinstance(have, dict) else have
        n = new.get("sha256") if isinstance(new, dict) else new
        if h != n:
            def show(x):
                if x is None:
                    return "none"
                return f"{x['path']} (sha256 {x['sha256'][:12]})" if isinstance(x, dict) else x
            diffs.append(f"{key}: {what} were made from {show(have)}, not {show(new)}")
    if diffs:
        im = manifest.get("imatrix")
        if len(diffs) == 1 and diffs[0].startswith("imatrix:") and want.get("imatrix") is None and im:
            hint = f"pass the imatrix they were made with: --imatrix {im['path']}"
        else:
            hint = "make shelves for these inputs in another directory (qpatch shelves ... --out NEWDIR)"
        raise ShelfError(f"{where}: " + "; ".join(diffs), hint=hint)


# ------------------------------------------------------------------------------------------- reading


def load(directory, *, want: dict | None = None) -> ShelfSet:
    """A shelf set, every index read and every shard checked for presence and length."""
    d = Path(directory)
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise ShelfError(f"{d}: no shelves here (no {MANIFEST})",
                         hint="make them: qpatch shelves MODEL --types ... --out DIR")
    try:
        manifest = json.loads(mpath.read_text())
    except ValueError as e:
        raise ShelfError(f"{mpath}: not a shelf manifest ({e})") from None
    if manifest.get("format") != FORMAT:
        raise ShelfError(f"{mpath}: shelf format {manifest.get('format')}, this qpatch reads {FORMAT}")
    if want:
        check_same(manifest, want, d)
    groups = tuple(Group(g["name"], tuple(g["tensors"])) for g in manifest["groups"]["list"])
    n = len(groups) + 1
    shelves = {}
    for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
        ipath = sub / INDEX
        if not ipath.is_file():
            continue
        idx = json.loads(ipath.read_text())
        if idx.get("key") != manifest["key"]:
            raise ShelfError(f"{sub}: made for other inputs than {mpath} says", hint=f"remove {sub} and make it again")
        sizes = idx["shard_sizes"]
        for i, size in enumerate(sizes):
            p = sub / shard_name(i + 1, n)
            if not p.is_file():
                raise ModelError(f"{sub}: shelf {idx['type']} is missing shard {i + 1} of {n}: {p}",
                                 hint=f"remove {sub} and run qpatch shelves again to remake it")
            if p.stat().st_size != size:
                raise ModelError(f"{p}: shard of {p.stat().st_size} bytes, its index says {size} (truncated or "
                                 f"changed)", hint=f"remove {sub} and run qpatch shelves again to remake it")
        tensors, shard_of = {}, {}
        for name, entry in idx["tensors"].items():
            tensors[name] = Where(T[entry["type"]], entry["type_id"], sub / shard_name(entry["shard"] + 1, n),
                                  entry["offset"], entry["nbytes"])
            shard_of[name] = entry["shard"]
        t = T[idx["type"]]
        shelves[t] = Shelf(t, sub, tensors, shard_of, tuple(idx["fell_back"]), n)
    return ShelfSet(d, manifest, groups, shelves)


def source_tensors(model) -> dict:
    """name -> Where for the unquantized model's own tensors (what a tensor kept at its source type is)."""
    out = {}
    for h in _shards(model):
        lay = read_layout(h)
        for t in lay.tensors:
            typ = decode_type(t.type_id)
            out[t.name] = Where(typ, t.type_id, h, lay.data_offset + t.offset, tensor_bytes(typ, t.shape))
    return out


def _shards(model) -> list[Path]:
    from qpatch.gguf.header import read_model_headers

    return [h.path for h in read_model_headers(model)]


def read_index(shelf_dir: Path) -> dict:
    return json.loads((Path(shelf_dir) / INDEX).read_text())


# ------------------------------------------------------------------------------------------- making


def _policy_of(checkout: Path, binary: Path):
    """The policy compiled into the checkout's binary and the pin: what `apply` recorded, or stock for a
    checkout nothing was applied to."""
    if not (checkout / render.GENERATED_PATH).exists():
        co = Checkout(checkout)
        try:
            return loader.load("stock"), co.pin_name
        finally:
            co.close()
    applied, pol = runner.preflight(checkout, None, binary)
    return pol, applied.pin


def types_for(plans) -> list[T]:
    """The types these plans give any tensor other than its source type: what shelves must hold to assemble
    them (sorted by name)."""
    return sorted({t.type for p in plans for t in p.tensors if t.type != t.src_type}, key=lambda t: t.name)


def shelf_job(base: Job, t: T) -> Job:
    """`base` with every quantizable tensor asked for `t`, less those the run would abort on (a type that
    needs an imatrix entry the tensor lacks): they keep what the job gives them and the shelf does not
    offer them at `t`."""
    excluded: list[str] = []
    names = {x.name for x in base.model.tensors}
    for _ in range(len(names) + 1):
        pat = ".*" if not excluded else "^(?!(?:" + "|".join(re.escape(n) for n in excluded) + ")$)"
        job = dataclasses.replace(base, options=dataclasses.replace(base.options, overrides=((pat, t),)))
        bad = sorted({e.split(":")[0] for e in job.plan().errors} & names - set(excluded))
        if not bad:
            errors = job.plan().errors
            if errors:
                raise QuantizeError(f"no shelf at {t.name}: llama-quantize would fail: {errors[0]}")
            return job
        excluded += bad
    raise QuantizeError(f"no shelf at {t.name}: every tensor fails")


def make(model, types, out_dir, *, checkout, imatrix=None, backend: str = "cpu", groups: str | None = None,
         ties=(), threads: int | None = None, progress: Progress = SILENT) -> ShelfSet:
    """Make (or keep) one shelf per type; returns the set."""
    out_dir, checkout = Path(out_dir), Path(checkout)
    binary = cmake.binary(checkout, backend, "llama-quantize")
    if not binary.exists():
        raise BuildError(f"{binary} does not exist", hint=f"build it: qpatch build --{backend} --dir {checkout}")
    policy, pin = _policy_of(checkout, binary)
    base = Job.create(model, SHELF_FTYPE, policy=policy, pin=pin, imatrix=imatrix)
    cat = base.family.catalogue
    wanted = []
    for name in types:
        t = cat.parse_type(name, what="shelf type") if isinstance(name, str) else name
        if t not in wanted:
            wanted.append(t)
    if not wanted:
        raise UsageError("no type to shelve", hint="name them with --types q8_0,q4_k,... or --for POLICY@FTYPE")
    ident = identity(model, imatrix, pin, binary)
    group_list = make_groups(base.model, groups or DEFAULT_SPEC, ties)
    manifest = _open_manifest(out_dir, ident, group_list, groups or DEFAULT_SPEC, ties, base)
    for i, t in enumerate(wanted, 1):
        target = out_dir / t.name
        if (target / INDEX).is_file() and json.loads((target / INDEX).read_text()).get("key") == manifest["key"]:
            progress.note(f"[{i}/{len(wanted)}] shelf {t.name}: kept ({target})")
            continue
        progress.note(f"[{i}/{len(wanted)}] shelf {t.name}: quantizing {Path(model).name}")
        _make_one(base, t, binary, target, manifest, group_list, threads, progress)
    return load(out_dir)


def _open_manifest(out_dir: Path, ident: dict, group_list: list[Group], spec: str, ties, base: Job) -> dict:
    mpath = out_dir / MANIFEST
    groups = {"spec": spec, "ties": [list(t) for t in parse_ties(ties)],
              "list": [{"name": g.name, "tensors": list(g.tensors)} for g in group_list]}
    if mpath.is_file():
        manifest = json.loads(mpath.read_text())
        check_same(manifest, ident, out_dir)
        if manifest["groups"]["list"] != groups["list"]:
            raise ShelfError(f"{out_dir}: its shelves are grouped {manifest['groups']['spec']}"
                             + "".join(f", tie {'+'.join(t)}" for t in manifest["groups"]["ties"])
                             + f", not {spec}" + "".join(f", tie {'+'.join(t)}" for t in parse_ties(ties)),
                             hint="use the same --groups/--tie, or another --out directory")
        for stale in out_dir.glob(".tmp-*"):  # what an interrupted run left: never trusted
            shutil.rmtree(stale, ignore_errors=True)
        return manifest
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {out_dir}: {e.strerror}") from None
    key = hashlib.sha256(json.dumps(ident | {"groups": groups}, sort_keys=True).encode()).hexdigest()[:24]
    manifest = {"format": FORMAT, "key": key, **ident, "groups": groups, "ftype": SHELF_FTYPE,
                "order": None,  # llama-quantize's output order, from the first shelf (it differs between families)
                "shapes": {t.name: list(t.shape) for t in base.model.tensors}}
    _atomic_write(mpath, json.dumps(manifest, indent=1))
    return manifest


def _atomic_write(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {e.strerror}") from None


def _make_one(base: Job, t: T, binary: Path, target: Path, manifest: dict, group_list: list[Group],
              threads, progress: Progress):
    job = shelf_job(base, t)
    tmp = target.parent / f".tmp-{t.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        whole = tmp / f"{t.name}.gguf"
        t0 = time.perf_counter()
        runner.execute(binary, job.quantize_args(whole, threads=threads or os.cpu_count()), whole,
                       log=tmp / "llama-quantize.log", progress=progress)
        seconds = time.perf_counter() - t0
        result = compare(job, whole)
        if not result.ok:
            raise ShelfError(f"shelf {t.name}: what llama-quantize wrote is not what qpatch predicts; not kept\n"
                             + report(result))
        _record_order(target.parent, manifest, [x.name for x in read_layout(whole).tensors])
        index = split(whole, tmp, group_list, base.family.catalogue.family)
        whole.unlink()
        plan = {x.name: x for x in result.plan.tensors}
        index.update(type=t.name, key=manifest["key"], seconds=round(seconds, 3), policy=base.policy.name,
                     fell_back=sorted(n for n, e in index["tensors"].items()
                                      if plan[n].chosen and e["type"] != t.name))
        (tmp / INDEX).write_text(json.dumps(index, indent=1, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _record_order(out_dir: Path, manifest: dict, order: list[str]):
    """The order llama-quantize writes tensors in (a mix is written in it): recorded by the first shelf,
    the same for every later one."""
    if manifest["order"] is None:
        manifest["order"] = order
        _atomic_write(out_dir / MANIFEST, json.dumps(manifest, indent=1))
    elif manifest["order"] != order:
        raise ShelfError(f"{out_dir}: this llama-quantize wrote the tensors in another order than the shelves' "
                         "(another binary?)", hint="make these shelves in another --out directory")


def split(whole: Path, out: Path, group_list: list[Group], family: str, prefix: str = "shelf") -> dict:
    """Write `whole` (one llama-quantize output) as shards: its metadata, then one group per shard."""
    lay = read_layout(whole)
    infos = {t.name: t for t in lay.tensors}
    n = len(group_list) + 1
    total = len(lay.tensors)
    kv = [(k, raw) for k, raw in lay.kv if not k.startswith("split.")]
    align_kv = [(k, raw) for k, raw in kv if k == "general.alignment"]
    sizes, entries = [], {}
    sizes.append(writer.write(out / shard_name(1, n, prefix), kv + writer.split_entries(0, n, total), [],
                              lay.alignment))
    for gi, g in enumerate(group_list, 1):
        tensors = []
        for name in g.tensors:
            info = infos[name]
            typ = decode_type(info.type_id, family)
            tensors.append(writer.OutTensor(name, info.shape, info.type_id, tensor_bytes(typ, info.shape), whole,
                                            lay.data_offset + info.offset))
        kvs = writer.split_entries(gi, n, total) + align_kv
        path = out / shard_name(gi + 1, n, prefix)
        sizes.append(writer.write(path, kvs, tensors, lay.alignment))
        head = len(writer.header_bytes(kvs, tensors, lay.alignment))
        offset = 0
        for x in tensors:
            entries[x.name] = {"type": decode_type(x.type_id, family).name, "type_id": x.type_id, "shard": gi,
                               "offset": head + offset, "nbytes": x.nbytes}
            offset += (x.nbytes + lay.alignment - 1) // lay.alignment * lay.alignment
    missing = set(infos) - set(entries)
    if missing:
        raise ShelfError(f"{whole}: tensors in no group: {sorted(missing)[:3]}")
    return {"tensors": entries, "shard_sizes": sizes}


def split_prefix(out: Path) -> str:
    m = SPLIT_RE.match(out.name)
    return m.group("prefix") if m else out.name.removesuffix(".gguf")
