"""Build llama.cpp tools from a checkout with CMake, for the CPU or for CUDA.

One implementation behind `qpatch build` and `make build-cpu` / `make build-cuda`:
static libraries, no curl, Release, only the targets asked for (llama.cpp's own advice for
building the quantize tools), Ninja when present. Builds are incremental: CMake is
configured once per build directory and re-configured only when our settings change, so
switching policy recompiles one translation unit.

Build directories are `<checkout>/build-cpu` and `<checkout>/build-cuda`, binaries under their
`bin/` (CMAKE_RUNTIME_OUTPUT_DIRECTORY of llama.cpp); other tools rely on these paths.

CUDA architectures: `cuda_archs` if given (or CUDA_ARCHS through the CLI), else those of the
GPUs `nvidia-smi` reports, else DEFAULT_CUDA_ARCHS (Turing to Hopper; CUDA 13 dropped
everything older than 7.5). No nvcc is an error of ours with a fix, not CMake's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from qpatch.errors import BuildError, CheckoutError, UsageError
from qpatch.progress import SILENT, Progress

BACKENDS = ("cpu", "cuda")
DEFAULT_TARGETS = ("llama-quantize",)
KNOWN_TARGETS = ("llama-quantize", "llama-imatrix", "llama-perplexity", "llama-tokenize", "llama-cli")
# Turing, Ampere (A100, RTX 30), Ada (RTX 40, L4), Hopper (H100/H200): what CUDA 12 and 13 both build.
DEFAULT_CUDA_ARCHS = "75;80;86;89;90"

# Where a toolkit lives when nvcc is not on PATH (CMake's FindCUDAToolkit looks here too).
CUDA_HOMES = ("/usr/local/cuda",)

# Everything but the tools: tests, examples and the server are never needed here.
_COMMON_DEFS = {
    "CMAKE_BUILD_TYPE": "Release",
    "BUILD_SHARED_LIBS": "OFF",
    "LLAMA_CURL": "OFF",
    "LLAMA_BUILD_COMMON": "ON",
    "LLAMA_BUILD_TOOLS": "ON",
    "LLAMA_BUILD_TESTS": "OFF",
    "LLAMA_BUILD_EXAMPLES": "OFF",
    "LLAMA_BUILD_SERVER": "OFF",
    "GGML_BUILD_TESTS": "OFF",
    "GGML_BUILD_EXAMPLES": "OFF",
}

# CMake/nvcc failures we can name better than CMake does: (pattern in the log, message, hint).
_KNOWN_FAILURES = (
    (re.compile(r"CUDA::cublas|cublas_v2\.h"),
     "the CUDA toolkit has no cuBLAS (cublas_v2.h, libcublas), which ggml-cuda needs",
     "install the toolkit's math libraries (e.g. apt-get install cuda-libraries-dev-<version>, or the full toolkit)"),
    (re.compile(r"Unsupported gpu architecture '(compute_\w+)'|nvcc fatal\s*: Unsupported gpu architecture"),
     "this nvcc cannot build for one of the CUDA architectures asked for",
     "choose architectures this CUDA release supports, e.g. CUDA_ARCHS=90 (CUDA 13 dropped everything below 75)"),
    (re.compile(r"No CMAKE_CUDA_COMPILER could be found|Failed to find nvcc"),
     "CMake could not use nvcc", "set CUDACXX=/path/to/nvcc"),
)

_ARCHS_RE = re.compile(r"^\d+[af]?(-real|-virtual)?(;\d+[af]?(-real|-virtual)?)*$")
_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\] ")
_MAKE_STEP = re.compile(r"^\[\s*(\d+)%\] ")


def _no_update(done: int) -> None:
    """The progress update before a build's first step line."""


def build_dir(checkout_dir: str | os.PathLike, backend: str) -> Path:
    _check_backend(backend)
    return Path(checkout_dir) / f"build-{backend}"


def binary(checkout_dir: str | os.PathLike, backend: str, name: str) -> Path:
    """Where `build` puts tool `name` (it may not exist yet)."""
    return build_dir(checkout_dir, backend) / "bin" / name


def build(checkout_dir: str | os.PathLike, backend: str = "cpu", targets=DEFAULT_TARGETS, jobs: int | None = None,
          cuda_archs: str | None = None, progress: Progress | None = None, defines: dict | None = None) -> Path:
    """Configure (when needed) and build `targets`; returns the bin directory holding them.

    `defines` are the user's own CMake definitions (`--define GGML_CUDA_FA=OFF`): they stick to the
    build directory, so later builds that name none (a sweep's, `make build-cuda`) keep them; naming
    some replaces them all."""
    checkout = Path(checkout_dir).resolve()
    progress = progress or SILENT
    targets = _check_targets(targets)
    if not (checkout / "CMakeLists.txt").is_file() or not (checkout / "include" / "llama.h").is_file():
        raise CheckoutError(f"{checkout}: not a llama.cpp source tree (no CMakeLists.txt / include/llama.h)",
                            hint="create one with `qpatch fetch`, or pass --dir")
    cmake = shutil.which("cmake")
    if cmake is None:
        raise BuildError("cmake not found on PATH",
                         hint="install CMake >= 3.14 (apt-get install cmake, or pip install cmake)")
    bdir = build_dir(checkout, backend)
    defs = {**_COMMON_DEFS, **family_defines(checkout)}
    env = dict(os.environ)
    if backend == "cuda":
        nvcc = find_nvcc()
        archs, why = resolve_cuda_archs(cuda_archs)
        progress.note(f"CUDA architectures {archs} ({why}); nvcc {nvcc}")
        defs.update({"GGML_CUDA": "ON", "CMAKE_CUDA_ARCHITECTURES": archs, "CMAKE_CUDA_COMPILER": str(nvcc)})
    elif cuda_archs:
        raise UsageError("CUDA architectures only apply to a CUDA build (--cuda)")
    _configure(cmake, checkout, bdir, defs, _user_defines(bdir, defines), env, progress)
    args = [cmake, "--build", str(bdir), "--config", "Release", "--target", *targets,
            "--parallel", str(jobs or os.cpu_count() or 1)]
    _run(args, bdir / "qpatch-build.log", env, progress, what=f"build of {' '.join(targets)}")
    bindir = bdir / "bin"
    missing = [t for t in targets if not (bindir / t).is_file()]
    if missing:
        raise BuildError(f"the build succeeded but {', '.join(missing)} is not in {bindir}")
    return bindir


# ------------------------------------------------------------------------------ CUDA


def find_nvcc() -> Path:
    """The CUDA compiler CMake would use: $CUDACXX, PATH, $CUDA_HOME/$CUDA_PATH, /usr/local/cuda."""
    candidates = [os.environ.get("CUDACXX"), shutil.which("nvcc")]
    for var in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    candidates += [os.path.join(home, "bin", "nvcc") for home in CUDA_HOMES]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return Path(c)
    raise BuildError("a CUDA build needs nvcc, the CUDA compiler, and none was found "
                     "(looked at $CUDACXX, PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)",
                     hint="install the CUDA toolkit (https://developer.nvidia.com/cuda-downloads) and put its bin/ "
                          "on PATH, or set CUDACXX=/path/to/nvcc; or build for the CPU with `make build-cpu`")


def detect_gpu_archs() -> list[str]:
    """Compute capabilities of the GPUs present, as CMake architectures ("9.0" -> "90"); [] without a GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    archs = {line.strip().replace(".", "") for line in out.stdout.splitlines()
             if re.fullmatch(r"\d+\.\d+", line.strip())}
    return sorted(archs, key=int)


def resolve_cuda_archs(explicit: str | None) -> tuple[str, str]:
    """(architectures, why): explicit > GPUs present > DEFAULT_CUDA_ARCHS."""
    if explicit:
        archs = explicit.replace(",", ";").replace(" ", "")
        if not _ARCHS_RE.match(archs):
            raise UsageError(f"bad CUDA architectures '{explicit}'", hint="e.g. CUDA_ARCHS=90 or CUDA_ARCHS='80;86;90'")
        return archs, "from CUDA_ARCHS"
    found = detect_gpu_archs()
    if found:
        return ";".join(found), "the GPU(s) nvidia-smi reports"
    return DEFAULT_CUDA_ARCHS, "no GPU found by nvidia-smi: the default list; set CUDA_ARCHS to choose"


# ------------------------------------------------------------------------------ CMake


def family_defines(checkout: Path) -> dict:
    """What the checkout's pin family needs on top of _COMMON_DEFS (read from the checkout's record;
    none for a tree qpatch did not fetch)."""
    import git

    from qpatch.checkout.repo import Checkout
    from qpatch.families.pins import family_of

    try:
        with Checkout(checkout) as co:
            pin = co.pin_name
    except (CheckoutError, git.exc.GitError):  # a tree qpatch did not fetch
        return {}
    return dict(family_of(pin).cmake_defines)


def parse_defines(specs) -> dict:
    """`KEY=VALUE` strings (CMake -D definitions) as a dict; a malformed one is a UsageError."""
    out = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UsageError(f"bad CMake definition '{spec}'", hint="write KEY=VALUE, e.g. --define GGML_CUDA_FA=OFF")
        if key in _COMMON_DEFS or key.startswith("CMAKE_CUDA"):
            raise UsageError(f"{key} is set by qpatch build itself", hint="see `qpatch build --help`")
        out[key] = value
    return out


def _user_defines(bdir: Path, given: dict | None) -> dict:
    """The user's definitions: those given, else those the build directory was configured with."""
    if given is not None:
        return dict(sorted(given.items()))
    try:
        return json.loads((bdir / _STAMP).read_text()).get("user", {})
    except (OSError, ValueError):
        return {}


_STAMP = "qpatch-configure.json"


def _configure(cmake: str, checkout: Path, bdir: Path, defs: dict, user: dict, env: dict, progress: Progress):
    """Configure once; again only when the definitions change (a stamp beside CMakeCache.txt)."""
    stamp = bdir / _STAMP
    cache = bdir / "CMakeCache.txt"
    if cache.is_file() and not _same_source(cache, checkout):
        # a build directory copied or moved with its checkout: CMake refuses it, so start it afresh
        progress.note(f"{bdir} was configured for another source directory: configuring it afresh")
        shutil.rmtree(bdir)
    want = {"source": str(checkout), "defs": defs, "user": user}
    defs = {**defs, **user}
    old = {}
    if cache.is_file() and stamp.is_file():
        try:
            old = json.loads(stamp.read_text())
        except ValueError:
            pass
        if {"user": {}, **old} == want:
            return
    bdir.mkdir(parents=True, exist_ok=True)
    args = [cmake, "-S", str(checkout), "-B", str(bdir)]
    if not cache.is_file() and shutil.which("ninja"):
        args += ["-G", "Ninja"]  # an existing build dir keeps its generator
    args += [f"-U{k}" for k in old.get("user", {}) if k not in user]  # a definition dropped leaves the cache too
    args += [f"-D{k}={v}" for k, v in defs.items()]
    progress.note(f"configuring {bdir}")
    stamp.unlink(missing_ok=True)
    _run(args, bdir / "qpatch-configure.log", env, progress, what="CMake configure")
    stamp.write_text(json.dumps(want, indent=1, sort_keys=True) + "\n")


def _same_source(cache: Path, checkout: Path) -> bool:
    m = re.search(r"^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$", cache.read_text(errors="replace"), re.M)
    return m is None or Path(m.group(1)).resolve() == checkout.resolve()


def _run(args: list[str], log: Path, env: dict, progress: Progress, *, what: str):
    """Run a CMake command, logging everything, its [n/N] steps as a progress bar, the tail kept for errors."""
    tail: deque[str] = deque(maxlen=40)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as lf, ExitStack() as bar:
        lf.write("$ " + " ".join(args) + "\n")
        lf.flush()
        try:
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                    errors="replace", bufsize=1)
        except OSError as e:
            raise BuildError(f"{what}: cannot run {args[0]}: {e}") from None
        assert proc.stdout is not None
        update: Callable[[int], None] = _no_update
        total: int | None = None
        for line in proc.stdout:
            lf.write(line)
            line = line.rstrip()
            tail.append(line)
            m = _NINJA_STEP.match(line) or _MAKE_STEP.match(line)
            if not m:
                continue
            done, steps = (int(m.group(1)), int(m.group(2))) if m.re is _NINJA_STEP else (int(m.group(1)), 100)
            if steps != total:  # a new ninja run (CMake re-ran itself) counts its own steps
                bar.close()
                update, total = bar.enter_context(progress.bar(what, steps)), steps
            update(done)
        rc = proc.wait()
    if rc != 0:
        text = log.read_text(errors="replace")
        for pattern, message, hint in _KNOWN_FAILURES:
            if pattern.search(text):
                raise BuildError(f"{what} failed: {message}", hint=f"{hint}; full log: {log}")
        shown = "\n".join(tail)
        raise BuildError(f"{what} failed (exit {rc}); last lines:\n{shown}", hint=f"full log: {log}")


def _check_backend(backend: str):
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend '{backend}'", hint=f"choose one of: {', '.join(BACKENDS)}")


def _check_targets(targets) -> list[str]:
    if isinstance(targets, str):
        targets = targets.replace(",", " ").split()
    out = []
    for t in targets:
        if t not in KNOWN_TARGETS:
            raise UsageError(f"unknown build target '{t}'", hint=f"choose from: {', '.join(KNOWN_TARGETS)}")
        if t not in out:
            out.append(t)
    if not out:
        raise UsageError("no build target given", hint=f"choose from: {', '.join(KNOWN_TARGETS)}")
    return out
