"""qpatch.build: toolchain checks with our own messages, progress parsing, incremental builds."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import pytest
from click.testing import CliRunner
from helpers import stock_binary

from qpatch.build import cmake
from qpatch.cli import cli
from qpatch.errors import BuildError, CheckoutError, UsageError
from qpatch.progress import Progress


@pytest.fixture()
def fake_tree(tmp_path):
    """Just enough of a llama.cpp tree for the checks that run before CMake."""
    (tmp_path / "include").mkdir()
    (tmp_path / "CMakeLists.txt").write_text("")
    (tmp_path / "include" / "llama.h").write_text("")
    return tmp_path


@pytest.fixture()
def no_cuda(monkeypatch, tmp_path):
    """A machine without the CUDA toolkit or a GPU: nothing CUDA on PATH or in the usual homes."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("cmake", "ninja"):
        for d in os.environ["PATH"].split(os.pathsep):
            if os.path.isfile(os.path.join(d, tool)):
                (bindir / tool).symlink_to(os.path.join(d, tool))
                break
    monkeypatch.setenv("PATH", str(bindir))
    for var in ("CUDACXX", "CUDA_HOME", "CUDA_PATH", "CUDA_ROOT", "CUDA_ARCHS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(cmake, "CUDA_HOMES", (str(tmp_path / "no-cuda"),))


def test_cuda_without_nvcc_is_our_error(fake_tree, no_cuda):
    r = CliRunner().invoke(cli, ["build", "--cuda", "--dir", str(fake_tree)])
    assert r.exit_code == BuildError.exit_code
    assert "needs nvcc" in r.output and "CUDACXX" in r.output and "CMake" not in r.output
    assert not (fake_tree / "build-cuda").exists()  # failed before configuring anything


def test_cuda_archs_without_gpu_fall_back_to_documented_list(no_cuda):
    assert cmake.detect_gpu_archs() == []
    archs, why = cmake.resolve_cuda_archs(None)
    assert archs == cmake.DEFAULT_CUDA_ARCHS == "75;80;86;89;90"
    assert "no GPU" in why and "CUDA_ARCHS" in why


@pytest.mark.parametrize("given,expected", [("90", "90"), ("80,86, 90", "80;86;90"), ("90a;100-real", "90a;100-real")])
def test_cuda_archs_given(given, expected):
    assert cmake.resolve_cuda_archs(given) == (expected, "from CUDA_ARCHS")


def test_cuda_archs_malformed():
    with pytest.raises(UsageError, match="bad CUDA architectures"):
        cmake.resolve_cuda_archs("sm_90")


def test_not_a_checkout(tmp_path):
    r = CliRunner().invoke(cli, ["build", "--dir", str(tmp_path)])
    assert r.exit_code == CheckoutError.exit_code
    assert "not a llama.cpp source tree" in r.output


def test_unknown_target(fake_tree):
    r = CliRunner().invoke(cli, ["build", "--dir", str(fake_tree), "--target", "llama-server"])
    assert r.exit_code == UsageError.exit_code
    assert "unknown build target 'llama-server'" in r.output and "llama-imatrix" in r.output


def test_paths(tmp_path):
    assert cmake.binary(tmp_path, "cuda", "llama-imatrix") == tmp_path / "build-cuda" / "bin" / "llama-imatrix"
    with pytest.raises(UsageError):
        cmake.build_dir(tmp_path, "rocm")


class Recorder(Progress):
    def __init__(self):
        self.steps = []

    @contextmanager
    def bar(self, label, total):
        yield lambda done: self.steps.append((label, done, total))


def _sh(script):
    return [sys.executable, "-c", f"import sys; {script}"]


def test_progress_bar_follows_ninja_and_make_lines(tmp_path):
    rec = Recorder()
    cmake._run(_sh("print('[1/3] Building C object a.o'); print('noise'); print('[3/3] Linking CXX executable "
                   "bin/llama-quantize'); print('[ 50%] Built target ggml')"), tmp_path / "log", dict(os.environ),
               rec, what="x")
    assert rec.steps == [("x", 1, 3), ("x", 3, 3), ("x", 50, 100)]
    assert "noise" in (tmp_path / "log").read_text()


def test_failure_shows_the_last_lines_and_the_log(tmp_path):
    with pytest.raises(BuildError) as e:
        cmake._run(_sh("print('[1/2] cc a.c'); print('a.c:1: error: boom'); sys.exit(3)"), tmp_path / "log",
                   dict(os.environ), Progress(), what="build of llama-quantize")
    assert "build of llama-quantize failed (exit 3)" in str(e.value) and "a.c:1: error: boom" in str(e.value)
    assert str(tmp_path / "log") in e.value.hint


def test_known_cmake_failure_is_named(tmp_path):
    with pytest.raises(BuildError, match="no cuBLAS"):
        cmake._run(_sh("print('Target \"ggml-cuda\" links to:'); print('  CUDA::cublas'); sys.exit(1)"),
                   tmp_path / "log", dict(os.environ), Progress(), what="CMake configure")


@pytest.mark.binary
def test_build_is_incremental(stock_quantize):
    """A second build of an unchanged tree configures nothing and compiles nothing."""
    tree = stock_quantize.parents[2]
    stamp = tree / "build-cpu" / "qpatch-configure.json"
    with stock_binary.locked():
        before = stamp.stat().st_mtime_ns
        assert cmake.build(tree, "cpu") == stock_quantize.parent
        assert stamp.stat().st_mtime_ns == before
        assert "no work to do" in (tree / "build-cpu" / "qpatch-build.log").read_text()


@pytest.fixture()
def fake_cmake(tmp_path):
    """A cmake that records its arguments and writes a CMakeCache.txt naming the source directory."""
    log = tmp_path / "cmake-calls"
    exe = tmp_path / "cmake"
    exe.write_text(f"""#!{sys.executable}
import sys, pathlib
a = sys.argv[1:]
open({str(log)!r}, "a").write(" ".join(a) + "\\n")
b = pathlib.Path(a[a.index("-B") + 1]); b.mkdir(parents=True, exist_ok=True)
(b / "CMakeCache.txt").write_text("CMAKE_HOME_DIRECTORY:INTERNAL=" + a[a.index("-S") + 1] + "\\n")
""")
    exe.chmod(0o755)
    return str(exe), log


def _configure(cmake_exe, src, bdir, given):
    cmake._configure(cmake_exe, src, bdir, {"CMAKE_BUILD_TYPE": "Release"}, cmake._user_defines(bdir, given),
                     dict(os.environ), Progress())


def test_user_defines_stick_to_the_build_directory(fake_cmake, fake_tree):
    cmake, log = fake_cmake
    bdir = fake_tree / "build-cpu"
    _configure(cmake, fake_tree, bdir, {"GGML_CUDA_FA": "OFF"})
    _configure(cmake, fake_tree, bdir, None)  # a later build naming none keeps them: no new configure
    calls = log.read_text().splitlines()
    assert len(calls) == 1 and "-DGGML_CUDA_FA=OFF" in calls[0] and "-DCMAKE_BUILD_TYPE=Release" in calls[0]
    _configure(cmake, fake_tree, bdir, {})  # naming others (here none) replaces them, and the cache forgets them
    assert "-UGGML_CUDA_FA" in log.read_text().splitlines()[1]


def test_a_moved_build_directory_is_configured_afresh(fake_cmake, fake_tree):
    cmake, log = fake_cmake
    bdir = fake_tree / "build-cpu"
    _configure(cmake, fake_tree, bdir, None)
    (bdir / "CMakeCache.txt").write_text("CMAKE_HOME_DIRECTORY:INTERNAL=/somewhere/else\n")
    (bdir / "stale.o").write_text("")
    _configure(cmake, fake_tree, bdir, None)
    assert len(log.read_text().splitlines()) == 2 and not (bdir / "stale.o").exists()


@pytest.mark.parametrize("spec,message", [("NOEQUALS", "bad CMake definition"), ("bad key=1", "bad CMake definition"),
                                          ("CMAKE_BUILD_TYPE=Debug", "set by qpatch build itself"),
                                          ("CMAKE_CUDA_ARCHITECTURES=80", "set by qpatch build itself")])
def test_bad_defines_are_refused(fake_tree, spec, message):
    r = CliRunner().invoke(cli, ["build", "--dir", str(fake_tree), "-D", spec])
    assert r.exit_code == 2 and message in r.output


def test_cli_progress_in_a_log_prints_a_line_per_tenth(capsys):
    from qpatch.cli.progress import ClickProgress

    with ClickProgress().bar("quantizing m.gguf", 20) as update:
        for done in range(1, 21):
            update(done)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"quantizing m.gguf: {n}/20" for n in (1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20)]
