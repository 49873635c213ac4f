"""Findings of the second new user's trial (issue "no traceback anywhere, policies checked when they load"):
each test failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from qpatch.cli import cli
from qpatch.errors import ModelError, PolicyError, UsageError
from qpatch.gguf.synth import write_imatrix
from qpatch.policy.model import check_pattern

HEADER = "from qpatch.policy.model import *  # T and the rule vocabulary\n\n"


def run(*args, **kw):
    return CliRunner().invoke(cli, [str(a) for a in args], **kw)


def no_traceback(r):
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output


@pytest.fixture
def readonly(tmp_path):
    """A directory nobody may write into: a read-only tmpfs where the machine lets us mount one (as root,
    file modes do not stop writes), else a directory without write permission (as another user)."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)],
                          capture_output=True).returncode != 0:
            pytest.skip("root, and no read-only tmpfs can be mounted here")
        yield d
        subprocess.run(["umount", str(d)], capture_output=True)
    else:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)


# ---------------------------------------------------------------- crashes on paths that cannot be written


@pytest.mark.parametrize("args", [
    ("synth", "deepseek-v3-mini", "{ro}/a.gguf"),
    ("synth", "deepseek-v3-mini", "{ro}/sub/a.gguf", "--mkdir"),
    ("render", "deepseek-v3", "-o", "{ro}/x.h"),
    ("fetch", "--dir", "{ro}/llama.cpp"),
], ids=["synth", "synth-mkdir", "render", "fetch"])
def test_an_unwritable_output_is_an_error_not_a_traceback(args, readonly, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(*[a.format(ro=readonly) for a in args])
    no_traceback(r)
    assert r.exit_code == UsageError.exit_code and str(readonly) in r.stderr, r.output


def test_synth_leaves_nothing_behind_when_its_imatrix_cannot_be_written(readonly, tmp_path):
    r = run("synth", "deepseek-v3-mini", tmp_path / "b.gguf", "--imatrix", readonly / "a.imatrix.gguf")
    no_traceback(r)
    assert r.exit_code == UsageError.exit_code and "a.imatrix.gguf" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]  # no b.gguf, no temporary file


def test_import_to_an_unwritable_directory(readonly, zoo_files):
    model, _ = zoo_files["deepseek2-mla-10L"]
    r = run("import", "mine", "--model", model, "-f", "Q4_K_M", "--tensor-type", "attn=q8_0", "--out", readonly)
    no_traceback(r)
    assert r.exit_code == UsageError.exit_code and "mine.py" in r.stderr


def test_import_from_a_gguf_without_model(zoo_files, tmp_path):
    """--model defaults to the quant's own shapes (the help says so): it crashed on Path(None)."""
    from qpatch.quantize import runner  # noqa: F401  (the quant is written with a real binary elsewhere)
    from qpatch.recipes import importer

    model, _ = zoo_files["deepseek2-mla-10L"]
    r = importer.import_policy("from-gguf", model=None, gguf=model, pin="0c1e57098", out_dir=tmp_path)
    assert r.path.is_file() and "deepseek2-mla-10L.gguf" in r.path.read_text()


def test_import_refuses_to_hide_a_shipped_policy(zoo_files, tmp_path):
    model, _ = zoo_files["deepseek2-mla-10L"]
    r = run("import", "deepseek-v3", "--gguf", model, "--out", tmp_path)
    assert r.exit_code == UsageError.exit_code and "qpatch ships" in r.stderr
    assert not (tmp_path / "deepseek_v3.py").exists()
    assert run("import", "deepseek-v3", "--gguf", model, "--out", tmp_path, "--force").exit_code == 0


def test_import_quotes_a_directory_with_spaces(zoo_files, tmp_path):
    model, _ = zoo_files["deepseek2-mla-10L"]
    r = run("import", "mine", "--gguf", model, "--out", tmp_path / "my pols")
    assert r.exit_code == 0, r.output
    assert f"--policies '{tmp_path / 'my pols'}' plan" in r.stdout


# ------------------------------------------------------------------------------- policies checked at load


@pytest.mark.parametrize("body,message", [
    ('rule(Select(pattern=r"^blk\\.(0|1\\.ffn_"), T.Q8_0)', "not a valid regex"),
    ('rule(Select(pattern=r"(?<=blk\\.)1\\.ffn"), T.Q8_0)', "lookbehind"),
    ('rule(Select(pattern=r"(?i)FFN_DOWN"), T.Q8_0)', "inline flags"),
    ('rule(Select(pattern=r"ffn_down\\Z"), T.Q8_0)', "\\Z"),
    ('rule(Select(pattern=r"(?P<x>ffn)_down"), T.Q8_0)', "named groups"),
], ids=["python-invalid", "lookbehind", "flags", "anchor", "named"])
def test_a_bad_pattern_is_refused_at_load_naming_file_and_line(body, message, tmp_path):
    (tmp_path / "bad.py").write_text(HEADER + f'POLICY = Policy(name="bad", summary="x", rules=(\n    {body},\n))\n')
    for command in ("show", "render"):  # both succeeded before; apply committed a regex std::regex throws on
        r = run("--policies", tmp_path, command, "bad")
        no_traceback(r)
        assert r.exit_code == PolicyError.exit_code and f"{tmp_path.name}/bad.py:4" in r.stderr and message in r.stderr


def test_patterns_both_grammars_read_alike_pass():
    for ok in (r"^blk\.(0|1)\.ffn_down\.weight$", r"ffn_(gate|up)_exps", r"blk\.\d+\.attn_(?:k|v)", r"a\(?<=b",
               r"^blk\.[0-9]{1,2}\.", r"(?!x)ffn", r"a+?b*?"):
        check_pattern(ok)


@pytest.mark.parametrize("setting,message", [
    ('fallback=((T.IQ4_NL, "q8_0"),)', "fallback entries are (T.FROM, T.TO) pairs"),
    ('missing_imatrix="q4_0"', "missing_imatrix must be"),
    ('archs="deepseek2"', "archs must be a tuple of strings"),
])
def test_a_bad_setting_is_refused_at_load(setting, message, tmp_path):
    (tmp_path / "bad.py").write_text(HEADER + f'POLICY = Policy(name="bad", summary="x", rules=(),\n    {setting})\n')
    r = run("--policies", tmp_path, "show", "bad")
    no_traceback(r)
    assert r.exit_code == PolicyError.exit_code and message in r.stderr
    assert ": :" not in r.stderr  # the doubled colon of an empty source


def test_errors_name_the_file_from_inside_the_policy_directory(tmp_path, monkeypatch):
    """`cd mypols && qpatch --policies . show bad` named `/<string>:6` (a dataclass's generated __init__)."""
    (tmp_path / "bad.py").write_text(HEADER + 'POLICY = Policy(name="bad", summary="x", rules=(\n'
                                     '    rule("ffn_down", Step("two")),\n))\n')
    monkeypatch.chdir(tmp_path)
    r = run("--policies", ".", "show", "bad")
    assert r.exit_code == PolicyError.exit_code and f"{tmp_path.name}/bad.py:4" in r.stderr, r.stderr
    assert "<string>" not in r.stderr


def test_a_file_name_with_dashes_is_explained(tmp_path):
    (tmp_path / "dash-name.py").write_text(HEADER + 'POLICY = Policy(name="dash-name", summary="x", rules=())\n')
    r = run("--policies", tmp_path, "show", "dash-name")
    assert r.exit_code == PolicyError.exit_code and "rename it dash_name.py" in r.stderr


def test_qpatch_policies_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("QPATCH_POLICIES", str(tmp_path / "nonexistent"))
    r = run("list")
    assert r.exit_code == PolicyError.exit_code and "QPATCH_POLICIES" in r.stderr


def test_a_policy_for_another_pin_is_refused_by_plan_and_render(tmp_path, zoo_files):
    (tmp_path / "pinned.py").write_text(HEADER + 'POLICY = Policy(name="pinned", summary="x", rules=(), '
                                        'pins=("4227c9be",))\n')
    model, _ = zoo_files["deepseek2-mla-10L"]
    for args in (("plan", model, "-f", "Q4_K_M", "-p", "pinned"), ("render", "pinned"),
                 ("export", "pinned", model, "-f", "Q4_K_M")):
        r = run("--policies", tmp_path, *args)
        assert r.exit_code == PolicyError.exit_code and "is for pin(s) 4227c9be, not 0c1e57098" in r.stderr
    r = run("--policies", tmp_path, "plan", model, "-f", "Q4_K_M", "-p", "pinned", "--pin", "4227c9be")
    assert r.exit_code == 0, r.output


# ----------------------------------------------------------------------------------- files of the wrong kind


def test_files_of_the_wrong_kind_say_what_they_are(zoo_files, tmp_path):
    model, im = zoo_files["deepseek2-mla-10L"]
    r = run("plan", im, "-f", "Q4_K_M")
    assert r.exit_code == ModelError.exit_code and "an imatrix file, not a model" in r.stderr
    (tmp_path / "t.txt").write_text("hello, this is text\n" * 10)
    r = run("plan", model, "-f", "Q4_K_M", "--imatrix", tmp_path / "t.txt")
    assert r.exit_code == ModelError.exit_code and "not an imatrix file" in r.stderr
    r = run("plan", model, "-f", "Q4_K_M", "--imatrix", model)
    assert r.exit_code == ModelError.exit_code and "a GGUF model, not an imatrix" in r.stderr


def test_ik_refuses_a_gguf_imatrix(zoo_files, tmp_path):
    """ik_llama.cpp 55d3c05b's llama-quantize reads only the legacy format (no gguf_init in its load_imatrix)."""
    from helpers.zoo import BY_NAME

    model, im = zoo_files["deepseek-v3-thin-61L"]
    r = run("plan", model, "-f", "IQ2_KS", "--pin", "ik-55d3c05b", "--imatrix", im)
    assert r.exit_code == ModelError.exit_code and "reads only the legacy binary format" in r.stderr
    dat = write_imatrix(BY_NAME["deepseek-v3-thin-61L"], tmp_path / "im.dat", legacy=True)
    assert run("plan", model, "-f", "IQ2_KS", "--pin", "ik-55d3c05b", "--imatrix", dat).exit_code == 0


# ------------------------------------------------------------------------------------- round trips, messages


def test_render_does_not_overwrite_a_file_it_did_not_generate(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(256)))
    r = run("render", "stock", "-o", gguf)
    no_traceback(r)
    assert r.exit_code == UsageError.exit_code and gguf.read_bytes()[:4] == b"GGUF"
    h = tmp_path / "x.h"
    assert run("render", "stock", "-o", h).exit_code == 0
    assert run("render", "deepseek-v3", "-o", h).exit_code == 0  # its own header: replaced
    assert "policy: deepseek-v3" in h.read_text()
    assert run("render", "stock", "-o", gguf, "--force").exit_code == 0


def test_ik_export_stdout_is_the_custom_q_string_alone(zoo_files, tmp_path):
    from helpers.zoo import BY_NAME

    model, _ = zoo_files["deepseek-v3-thin-61L"]
    dat = write_imatrix(BY_NAME["deepseek-v3-thin-61L"], tmp_path / "im.dat", legacy=True)
    r = run("export", "deepseek-v3-ik", model, "-f", "IQ2_KS", "--imatrix", dat, "--pin", "ik-55d3c05b")
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 1 and "=" in r.stdout and not r.stdout.startswith("#")
    assert r.stderr.startswith("# qpatch export")
    # the round trip a user types: qpatch import X --custom-q "$(cat cq.txt)"
    r2 = run("import", "back", "--model", model, "-f", "IQ2_KS", "--imatrix", dat, "--pin", "ik-55d3c05b",
             "--custom-q", r.stdout.strip(), "--out", tmp_path / "pol")
    assert r2.exit_code == 0, r2.output


def test_messages_name_the_option_the_user_gave(zoo_files):
    model, _ = zoo_files["deepseek2-mla-10L"]
    r = run("plan", model, "-f", "Q4_K_M", "--kind-type", "attn-v-type=q8_0")
    assert r.exit_code == UsageError.exit_code and "--kind-type is not an option" in r.stderr
    r = run("import", "x", "--model", model, "-f", "Q4_K_M", "--custom-q", "attn=iq4_ks")  # a recipe string
    assert r.exit_code == UsageError.exit_code and "in --custom-q" in r.stderr and "--tensor-type" not in r.stderr
    r = run("import", "x", "--model", model, "-f", "IQ2_KS", "--pin", "ik-55d3c05b", "--custom-q", "attn=q9_9")
    assert r.exit_code == UsageError.exit_code and "custom quantization input" in r.stderr
    assert "--tensor-type" not in r.stderr


def test_json_errors_are_listed_on_stderr_too(zoo_files):
    model, _ = zoo_files["deepseek2-mla-10L"]
    r = run("plan", model, "-f", "IQ1_M", "--format", "json")
    assert r.exit_code == 8
    assert r.stderr.count("problem: ") == 5 and "more in the JSON's" in r.stderr


def test_a_missing_imatrix_answered_with_q8_0_is_summarised(zoo_files):
    model, _ = zoo_files["deepseek2-mla-10L"]
    r = run("plan", model, "-f", "IQ1_M", "--policy", "deepseek-v3")
    assert r.exit_code == 0, r.output
    assert "warning: " in r.output and "are Q8_0 instead of IQ1_M's types" in r.output


def test_patches_list_keeps_a_multi_line_upstream_field():
    r = run("patches", "list", "--pin", "ik-55d3c05b")
    assert r.exit_code == 0
    assert "Not needed for a git checkout of the same commit" in r.stdout


def test_setup_declares_every_package(tmp_path):
    """setuptools warns "Package would be ignored" (about 120 lines of `make setup`) for undeclared data folders;
    its build_py step is where the warning comes from, and what a wheel build runs."""
    pytest.importorskip("setuptools")  # the build backend pyproject.toml names (a venv of Python 3.12+ lacks it)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "setup.py", "build", "--build-base", str(tmp_path)], capture_output=True,
                       text=True, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "would be ignored" not in r.stdout + r.stderr
    assert (tmp_path / "lib" / "qpatch_data" / "patches" / "ik-55d3c05b" / "series").is_file()
    assert (tmp_path / "lib" / "qpatch" / "codegen" / "templates" / "policy.h.j2").is_file()


def test_plot_without_matplotlib_says_which_extra(tmp_path, monkeypatch, zoo_files):
    """matplotlib is the optional extra qpatch[plot]: --plot without it is refused before any work starts."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    model, _ = zoo_files["deepseek2-mla-10L"]
    (tmp_path / "t.txt").write_text("text\n")
    r = run("eval", model, model, "--text", tmp_path / "t.txt", "--plot", tmp_path / "p.png")
    assert r.exit_code == UsageError.exit_code and "qpatch[plot]" in r.stderr
    assert not (tmp_path / "p.png").exists()
