"""Assemble a mix from shelves: every tensor's bytes at its type, copied (or linked) from the shelf that
holds it, so no tensor is quantized again.

`assemble` writes what `qpatch quantize` would write for a policy and ftype: the same plan (the job is
built the same way), the tensors in llama-quantize's order and layout, and its key/values: those the
shelf's own run wrote, with general.file_type, qpatch.policy, qpatch.pin and quantize.imatrix.file set as
that run would have set them. `write_mix` is the part `measure` shares: any name -> type map, as one file,
or as a split model whose shards are links to shelf shards wherever a whole shard is taken as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from qpatch.errors import ShelfError, UsageError
from qpatch.gguf import writer
from qpatch.gguf.catalogue import T
from qpatch.gguf.header import read_layout
from qpatch.job import Job, require_runnable
from qpatch.policy.model import Policy
from qpatch.progress import SILENT, Progress
from qpatch.shelves import shelf as shelves
from qpatch.shelves.shelf import ShelfSet, Where

IMATRIX_FILE_MAX = 127  # llama-quantize copies the path into a 128-byte override value


@dataclass(frozen=True)
class MixResult:
    files: tuple[Path, ...]  # what the user passes on: the file, or the first shard
    written: int  # shards (or files) written
    linked: int  # shards that are links to shelf shards
    bytes_written: int  # tensor data copied
    tensor_bytes: int  # tensor data of the whole mix

    @property
    def path(self) -> Path:
        return self.files[0]


def resolve(sset: ShelfSet, types: dict, source: dict, prefer=()) -> dict:
    """name -> Where for every tensor at its type; ShelfError naming the types no shelf holds."""
    order = list(prefer) + sorted((t for t in sset.shelves if t not in prefer), key=lambda t: t.name)
    out: dict[str, Where] = {}
    lacking: dict[T, list[str]] = {}
    for name in sset.order:
        want = types[name]
        hit = next((s.tensors[name] for t in order if (s := sset.shelves[t]).tensors[name].type == want), None)
        if hit is None and name in source and source[name].type == want:
            hit = source[name]
        if hit is None:
            lacking.setdefault(want, []).append(name)
            continue
        out[name] = hit
    if lacking:
        names = sorted(t.name for t in lacking)
        first = lacking[min(lacking, key=lambda t: t.name)][0]
        raise ShelfError(f"no shelf in {sset.dir} holds {', '.join(names)} for the tensors that need it "
                         f"({sum(map(len, lacking.values()))} tensors, e.g. {first})",
                         hint=f"shelve them: qpatch shelves MODEL --types {','.join(n.lower() for n in names)} "
                              f"--out {sset.dir}")
    return out


def _targets(out: Path, n: int, links: bool) -> list[Path]:
    if not links:
        return [out]
    prefix = shelves.split_prefix(out)
    return [out.with_name(f"{prefix}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1)]


def write_mix(sset: ShelfSet, types: dict, out, *, kv: list, source: dict, links: bool = False, force: bool = False,
              prefer=(), progress: Progress = SILENT) -> MixResult:
    out = Path(out)
    where = resolve(sset, types, source, prefer)
    if not out.parent.is_dir():
        raise UsageError(f"cannot write {out}: there is no directory {out.parent}", hint="create it first")
    targets = _targets(out, sset.n_shards, links)
    existing = [p for p in targets if p.exists() or p.is_symlink()]
    if existing and not force:
        raise UsageError(f"{existing[0]} exists", hint="pass --force to replace it")
    if not os.access(out.parent, os.W_OK):
        raise UsageError(f"cannot write {out}: {out.parent} is not writable")
    align = read_layout(sset.metadata_shard()).alignment
    total = sum(w.nbytes for w in where.values())

    def tensors(names):
        return [writer.OutTensor(n, _shape(sset, n), where[n].type_id, where[n].nbytes, where[n].path, where[n].offset)
                for n in names]

    written = linked = copied = 0
    with progress.bar(f"assembling {out.name}", total) as update:
        def on_bytes(n):
            nonlocal copied
            copied += n
            update(copied)

        if not links:
            _replace(out, lambda tmp: writer.write(tmp, kv, tensors(sset.order), align, on_bytes=on_bytes))
            return MixResult((out,), 1, 0, copied, total)
        n = sset.n_shards
        _replace(targets[0], lambda tmp: writer.write(tmp, kv + writer.split_entries(0, n, len(sset.order)), [], align))
        written += 1
        align_kv = [(k, raw) for k, raw in kv if k == "general.alignment"]
        for gi, g in enumerate(sset.groups, 1):
            whole = next((s for t in list(prefer) + sorted(sset.shelves, key=lambda t: t.name)
                          if all((s := sset.shelves[t]).tensors[x].type == types[x] for x in g.tensors)), None)
            if whole is not None:
                _replace(targets[gi], lambda tmp, s=whole, gi=gi: os.symlink(s.shard_path(gi).resolve(), tmp))
                linked += 1
                continue
            kvs = writer.split_entries(gi, n, len(sset.order)) + align_kv
            _replace(targets[gi], lambda tmp, g=g, kvs=kvs: writer.write(tmp, kvs, tensors(g.tensors), align,
                                                                        on_bytes=on_bytes))
            written += 1
    return MixResult(tuple(targets), written, linked, copied, total)


def _shape(sset: ShelfSet, name: str) -> tuple[int, ...]:
    return tuple(sset.manifest["shapes"][name])


def _replace(target: Path, make) -> None:
    """Make `target` under a temporary name, then rename it over whatever was there."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    try:
        make(tmp)
        os.replace(tmp, target)
    except OSError as e:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        raise UsageError(f"cannot write {target}: {e.strerror}") from None
    except BaseException:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        raise


def set_values(kv: list, values: dict) -> list:
    """The entries with some values replaced in place (key order kept), others appended in the given order."""
    new = {k: raw for k, raw in values.items()}
    out = [(k, new.pop(k) if k in new else raw) for k, raw in kv]
    return out + list(new.items())


def quantize_kv(sset: ShelfSet, job: Job) -> list:
    """The key/values `qpatch quantize` would write for `job`: the shelf run's, with what depends on the job
    set the way llama-quantize sets it."""
    kv = [(k, raw) for k, raw in read_layout(sset.metadata_shard()).kv if not k.startswith("split.")]
    keys = {k for k, _ in kv}
    values = {"general.file_type": writer.kv_entry("general.file_type", writer.U32, job.options.ftype.id),
              "qpatch.policy": writer.kv_entry("qpatch.policy", writer.STRING, job.policy.name),
              "qpatch.pin": writer.kv_entry("qpatch.pin", writer.STRING, job.pin)}
    if job.imatrix_path is not None and "quantize.imatrix.file" in keys:
        path = str(job.imatrix_path).encode()[:IMATRIX_FILE_MAX]
        values["quantize.imatrix.file"] = writer.kv_entry("quantize.imatrix.file", writer.STRING, path)
    return set_values(kv, values)


def assemble(model, out, *, shelves_dir, policy: "str | Policy", ftype: str, imatrix=None, pin: str | None = None,
             links: bool = False, force: bool = False, progress: Progress = SILENT) -> tuple[MixResult, Job]:
    """Write the mix `qpatch quantize MODEL OUT -f FTYPE --policy POLICY` would write, from shelves."""
    sset = shelves.load(shelves_dir)
    pin = pin or sset.pin
    shelves.check_same(sset.manifest, shelves.identity(model, imatrix, pin, None), sset.dir)
    if not sset.shelves:
        raise ShelfError(f"{sset.dir}: the manifest is there but no shelf is (an interrupted first run?)",
                         hint=f"qpatch shelves MODEL --types ... --out {sset.dir}")
    job = Job.create(model, ftype, policy=policy, pin=pin, imatrix=imatrix)
    plan = job.plan()
    require_runnable(plan)
    types: dict[str, T] = {t.name: t.type for t in plan.tensors}
    if sorted(types) != sorted(sset.order):
        raise ShelfError(f"{sset.dir}: the shelves hold other tensors than the plan of {model}")
    source = shelves.source_tensors(model)
    result = write_mix(sset, types, out, kv=quantize_kv(sset, job), source=source, links=links, force=force,
                       progress=progress)
    return result, job
