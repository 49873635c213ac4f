"""Run the checkout's own llama-quantize with a progress bar, then verify the output.

Before running, it refuses jobs whose result could not be trusted: a checkout whose generated
header belongs to another policy, a header that is stale against the policy file, a binary
older than the header (not rebuilt since `qpatch apply`), or a job the plan says
llama-quantize would abort.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import api, build, render
from .errors import BuildError, CheckoutError, QuantizeError
from .policy import loader
from .verify import VerifyResult, verify

_PROGRESS = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")


@dataclass
class Applied:
    policy: str
    pin: str
    header: Path


def applied(checkout: Path) -> Applied:
    """What `qpatch apply` recorded in the checkout (its generated commit's trailers), checked against the
    header on disk: a header changed since then is refused."""
    from .checkout import HEADER_HASH_TRAILER, POLICY_TRAILER, Checkout

    co = Checkout(checkout)
    try:
        st = co.status()
    finally:
        co.close()
    header = Path(checkout) / render.GENERATED_PATH
    rec = dict(st.record)
    if POLICY_TRAILER not in rec or not header.exists():
        why = "" if st.policy is None else f" (policy {st.policy} was applied by an older qpatch: apply it again)"
        raise CheckoutError(f"{checkout}: no policy applied{why}",
                            hint=f"run `qpatch apply POLICY --dir {checkout}` then `qpatch build --dir {checkout}`")
    if hashlib.sha256(header.read_bytes()).hexdigest() != rec.get(HEADER_HASH_TRAILER):
        raise CheckoutError(f"{header} was changed after `qpatch apply {rec[POLICY_TRAILER]}`: it is not what the "
                            f"checkout records", hint=f"run `qpatch apply {rec[POLICY_TRAILER]} --dir {checkout}`")
    return Applied(rec[POLICY_TRAILER], st.pin, header)


def _load_applied(checkout: Path, policy: str):
    """The policy from the search path, or from the directory `qpatch apply` recorded in the checkout."""
    from .apply import recorded_dirs
    from .checkout import Checkout
    from .errors import QpatchError

    try:
        extra = recorded_dirs(Checkout(checkout))
    except QpatchError:  # not a git checkout of qpatch's (a tree built by hand): the search path alone
        extra = ()
    return loader.load(policy, extra=extra)


def _commands(checkout: Path, binary: Path) -> tuple[str, str]:
    """(apply's --dir suffix, the build command) for hints that act on this checkout, not the default one."""
    from .policy.loader import repo_root

    backend = "cuda" if binary.parent.parent.name == "build-cuda" else "cpu"
    if Path(checkout).resolve() == (repo_root() / "llama.cpp").resolve():
        return "", f"make build-{backend}"
    return f" --dir {checkout}", f"qpatch build --{backend} --dir {checkout}"


def preflight(checkout: Path, policy: str | None, binary: Path) -> Applied:
    a = applied(checkout)
    policy = policy or a.policy
    dir_flag, build_cmd = _commands(checkout, binary)
    if policy != a.policy:
        raise QuantizeError(f"the checkout has policy '{a.policy}' applied, not '{policy}'",
                            hint=f"run `qpatch apply {policy}{dir_flag}` and `{build_cmd}`, or pass --policy {a.policy}")
    if a.header.read_text() != render.render(_load_applied(checkout, policy), a.pin):
        raise QuantizeError(f"{a.header} is stale: policy '{policy}' changed since it was applied",
                            hint=f"run `qpatch apply {policy}{dir_flag}` and `{build_cmd}`")
    if not binary.exists():
        raise BuildError(f"{binary} does not exist", hint=f"run `{build_cmd}`")
    if binary.stat().st_mtime < a.header.stat().st_mtime:
        raise QuantizeError(f"{binary} is older than the generated policy code {a.header.name}",
                            hint=f"rebuild it: `{build_cmd}` (one translation unit recompiles)")
    return a


def _bar(done: int, total: int, name: str, width: int = 30) -> str:
    fill = width * done // max(total, 1)
    return f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} {name[:48]:<48}"


def run(binary: Path, model, out, ftype: str, *, imatrix=None, extra_args=(), threads: int | None = None,
        log: Path | None = None, progress: bool = True) -> float:
    """Run llama-quantize; per-tensor log lines drive the progress bar. Returns seconds."""
    cmd = [str(binary)]
    if imatrix:
        cmd += ["--imatrix", str(imatrix)]
    cmd += list(extra_args) + [str(model), str(out), ftype]
    if threads:
        cmd.append(str(threads))
    log = Path(log) if log else Path(str(out) + ".log")
    t0 = time.perf_counter()
    with open(log, "w") as lf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        tty, shown = sys.stderr.isatty(), -1
        for line in proc.stdout:
            lf.write(line)
            m = _PROGRESS.match(line)
            if m and progress:
                done, total = int(m.group(1)), int(m.group(2))
                if tty:
                    sys.stderr.write(_bar(done, total, m.group(3)))
                elif 10 * done // total > shown:  # a log gets a line per tenth, not per tensor
                    shown = 10 * done // total
                    sys.stderr.write(f"quantizing: {done}/{total} tensors ({m.group(3)})\n")
                sys.stderr.flush()
        rc = proc.wait()
    if progress and tty:
        sys.stderr.write("\n")
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-8:])
        raise QuantizeError(f"llama-quantize exited with {rc}; log: {log}\n{tail}")
    return time.perf_counter() - t0


def metadata_args(policy: str, pin: str) -> list[str]:
    """What made the file, written into it (llama-quantize copies --override-kv keys to its output):
    `qpatch eval` and `verify` read them back."""
    return ["--override-kv", f"qpatch.policy=str:{policy}", "--override-kv", f"qpatch.pin=str:{pin}"]


def quantize(checkout: Path, model, out, ftype: str, *, policy: str | None = None, imatrix=None,
             tensor_types=(), output_tensor_type=None, token_embedding_type=None, pure=False,
             leave_output_tensor=False, threads=None, backend: str = "cpu", progress=True,
             custom_q=(), kind_types=(), ignore_imatrix_rules=False) -> tuple[VerifyResult, float]:
    checkout = Path(checkout)
    binary = build.binary(checkout, backend, "llama-quantize")
    a = preflight(checkout, policy, binary)
    pol = _load_applied(checkout, a.policy)
    p = api.make_plan(model, ftype, policy=pol, imatrix=imatrix, tensor_types=tensor_types, custom_q=custom_q,
                      kind_types=kind_types, ignore_imatrix_rules=ignore_imatrix_rules,
                      output_tensor_type=output_tensor_type, token_embedding_type=token_embedding_type, pure=pure,
                      leave_output_tensor=leave_output_tensor, pin=a.pin)
    api.require_runnable(p)
    family = api.family_of(a.pin)
    extra: list[str] = list(family.tensor_type_args(list(tensor_types) + list(custom_q)))
    for key, t in p.options.kind_types:  # ik's per-kind options, with ggml's own type names
        extra += [f"--{key.replace('_', '-')}", family.catalogue.ggml_name(t)]
    if ignore_imatrix_rules:
        extra.append("--ignore-imatrix-rules")
    if output_tensor_type:
        extra += ["--output-tensor-type", output_tensor_type]
    if token_embedding_type:
        extra += ["--token-embedding-type", token_embedding_type]
    if pure:
        extra.append("--pure")
    if leave_output_tensor:
        extra.append("--leave-output-tensor")
    extra += metadata_args(a.policy, a.pin)
    seconds = run(binary, model, out, ftype, imatrix=imatrix, extra_args=extra, threads=threads or os.cpu_count(),
                  progress=progress)
    r = verify(out, policy=pol, source=model, ftype=ftype, imatrix=imatrix, tensor_types=tensor_types, custom_q=custom_q,
               kind_types=kind_types, ignore_imatrix_rules=ignore_imatrix_rules,
               output_tensor_type=output_tensor_type, token_embedding_type=token_embedding_type, pure=pure,
               leave_output_tensor=leave_output_tensor, pin=a.pin)
    return r, seconds
