"""Run the checkout's own llama-quantize with a progress bar, then verify the output.

Before running, it refuses jobs whose result could not be trusted: a checkout whose generated
header belongs to another policy, a header that is stale against the policy file, a binary
older than the header (not rebuilt since `qpatch apply`), or a job the plan says
llama-quantize would abort.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

from qpatch.build import cmake
from qpatch.checkout.apply import Applied, recorded, recorded_policy
from qpatch.codegen import render
from qpatch.errors import BuildError, QuantizeError
from qpatch.job import Job, require_runnable
from qpatch.policy.model import Policy
from qpatch.progress import SILENT, Progress
from qpatch.quantize.verify import VerifyResult, compare

_PROGRESS = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")


def _commands(checkout: Path, binary: Path) -> tuple[str, str]:
    """(apply's --dir suffix, the build command) for hints that act on this checkout, not the default one."""
    from qpatch.shipped import default_checkout

    backend = "cuda" if binary.parent.parent.name == "build-cuda" else "cpu"
    if Path(checkout).resolve() == default_checkout().resolve():
        return "", f"make build-{backend}"
    return f" --dir {checkout}", f"qpatch build --{backend} --dir {checkout}"


def preflight(checkout: Path, policy: str | None, binary: Path) -> tuple[Applied, Policy]:
    """What is applied, and its policy (loaded once): refused unless header, policy and binary agree."""
    a = recorded(checkout)
    policy = policy or a.policy
    dir_flag, build_cmd = _commands(checkout, binary)
    if policy != a.policy:
        raise QuantizeError(f"the checkout has policy '{a.policy}' applied, not '{policy}'",
                            hint=f"run `qpatch apply {policy}{dir_flag}` and `{build_cmd}`, "
                                 f"or pass --policy {a.policy}")
    pol = recorded_policy(checkout, policy)
    if a.header.read_text() != render.render(pol, a.pin):
        raise QuantizeError(f"{a.header} is stale: policy '{policy}' changed since it was applied",
                            hint=f"run `qpatch apply {policy}{dir_flag}` and `{build_cmd}`")
    if not binary.exists():
        raise BuildError(f"{binary} does not exist", hint=f"run `{build_cmd}`")
    if binary.stat().st_mtime < a.header.stat().st_mtime:
        raise QuantizeError(f"{binary} is older than the generated policy code {a.header.name}",
                            hint=f"rebuild it: `{build_cmd}` (one translation unit recompiles)")
    return a, pol


def run(binary: Path, model, out, ftype: str, *, imatrix=None, extra_args=(), threads: int | None = None,
        log: Path | None = None, progress: Progress = SILENT) -> float:
    """Run llama-quantize on arguments given one by one (tests, stock binaries). Returns seconds."""
    args = (["--imatrix", str(imatrix)] if imatrix else []) + list(extra_args) + [str(model), str(out), ftype]
    return execute(binary, args + ([str(threads)] if threads else []), out, log=log, progress=progress)


def execute(binary: Path, args: list[str], out, *, log: Path | None = None,
            progress: Progress = SILENT) -> float:
    """Run `binary args`; its per-tensor log lines ("[ 12/ 1025] name") drive a progress bar. Returns seconds."""
    cmd = [str(binary)] + list(args)
    log = Path(log) if log else Path(str(out) + ".log")
    t0 = time.perf_counter()
    with open(log, "w") as lf, ExitStack() as bar:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        update = None
        for line in proc.stdout:
            lf.write(line)
            m = _PROGRESS.match(line)
            if m:
                if update is None:  # the total is known from the first tensor's line
                    update = bar.enter_context(progress.bar(f"quantizing {Path(out).name}", int(m.group(2))))
                update(int(m.group(1)))
        rc = proc.wait()
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-8:])
        raise QuantizeError(f"llama-quantize exited with {rc}; log: {log}\n{tail}")
    return time.perf_counter() - t0


def quantize(checkout: Path, model, out, ftype: str, *, policy: str | None = None, imatrix=None, threads=None,
             backend: str = "cpu", progress: Progress = SILENT, **options) -> tuple[VerifyResult, float]:
    """Quantize `model` with the checkout's llama-quantize, then verify the output against the same job.
    `options`: llama-quantize's type options, as `job.make_options` takes them."""
    checkout = Path(checkout)
    binary = cmake.binary(checkout, backend, "llama-quantize")
    a, pol = preflight(checkout, policy, binary)
    job = Job.create(model, ftype, policy=pol, pin=a.pin, imatrix=imatrix, **options)
    plan = job.plan()  # once: checked before the run, compared with what it wrote after
    require_runnable(plan)
    seconds = execute(binary, job.quantize_args(out, threads=threads or os.cpu_count()), out, progress=progress)
    return compare(job, out, plan=plan), seconds
