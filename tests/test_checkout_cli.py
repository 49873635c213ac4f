"""The checkout commands through click's CliRunner: fetch, status, reset, patches, rebase, pins."""

from pathlib import Path

import git
import pytest
from click.testing import CliRunner
from helpers.checkout_fixtures import QUANT

from qpatch.cli import cli
from qpatch.codegen.render import GENERATED_PATH as GEN
from qpatch.families.pins import load_pin


def _toml(pin) -> str:
    """pin.toml for a Pin (enough of TOML for what pins hold)."""
    lines = [f'name = "{pin.name}"', f'commit = "{pin.commit}"', f'family = "{pin.family}"']
    if pin.tag:
        lines.append(f'tag = "{pin.tag}"')
    for s in pin.sources:
        lines.append("[[source]]")
        lines += [f'{k} = "{v}"' for k, v in vars(s).items() if v]
    lines.append("[hashes]")
    lines += [f'"{p}" = "{h}"' for p, h in pin.file_hashes]
    return "\n".join(lines) + "\n"


@pytest.fixture
def test_pins(upstream, tmp_path, monkeypatch):
    """QPATCH_PATCHES with the real pins pointed at the test remote (and the real patches)."""
    root = tmp_path / "patches"
    real = Path(__file__).resolve().parents[1] / "patches"
    for name in ("4227c9be", "0c1e57098", "b6700"):
        (root / name).mkdir(parents=True)
        (root / name / "pin.toml").write_text(_toml(upstream.pin(name)))
        for f in (real / name).iterdir():
            if f.name != "pin.toml":
                (root / name / f.name).write_text(f.read_text())
    monkeypatch.setenv("QPATCH_PATCHES", str(root))
    return root


def run(*args, ok=True):
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert r.exit_code == 0, r.output
    return r


def test_fetch_status_patches_reset(upstream, test_pins, tmp_path):
    d = tmp_path / "llama.cpp"
    r = run("fetch", "--pin", "4227c9be", "--source", f"mirror:{upstream.path}", "--dir", d)
    assert f"fetched pin 4227c9be into {d} from mirror {upstream.path}\n" in r.stdout
    assert f"pristine commit {upstream.c4227}\n" in r.stdout
    assert f"verified {QUANT} sha256 eaed36bcb68d772c..." in r.stdout
    r = run("status", "--dir", d)
    assert "pin:       4227c9be (family b6700, upstream " in r.stdout
    assert f"source:    mirror {upstream.path}" in r.stdout and "tree:      clean" in r.stdout

    r = run("patches", "list", "--dir", d)
    assert "0001-qpatch-hook.patch\n    qpatch hook: let a generated policy choose tensor types\n" in r.stdout
    assert "upstream status: not submitted; qpatch-specific." in r.stdout
    r = run("patches", "check", "--dir", d)
    assert r.stdout == "pin 4227c9be:\n  0001-qpatch-hook.patch  applies\n"

    (d / QUANT).write_text("mine\n")
    (d / "notes.txt").write_text("mine\n")
    r = run("reset", "--dir", d, ok=False)
    assert r.exit_code == 5
    assert f"modified   {QUANT}" in r.stderr and "untracked  notes.txt" in r.stderr
    assert "hint: keep them with `git -C" in r.stderr
    assert (d / QUANT).read_text() == "mine\n"
    r = run("status", "--dir", d)
    assert f"tree:      dirty\n  modified   {QUANT}\n  untracked  notes.txt\n" in r.stdout
    (d / "notes.txt").unlink()
    git.Git(d).checkout("--", QUANT)
    r = run("reset", "--dir", d)
    assert r.stdout == f"{d}: already at pristine commit {upstream.c4227[:12]} of pin 4227c9be\n"


def test_rebase_report_and_apply(upstream, test_pins, base_checkout, checkout):
    d = base_checkout
    checkout.apply(load_pin("4227c9be"), {GEN: "// a\n"}, "qpatch/a", "qpatch: a")
    r = run("status", "--dir", d)
    assert "policy:    a\npatches:   0001-qpatch-hook.patch\n" in r.stdout
    r = run("rebase", "--to", "0c1e57098", "--source", "git", "--dir", d)
    assert "series of 4227c9be on 0c1e57098:\n  0001-qpatch-hook.patch  conflicts\n" in r.stdout
    assert f"      {QUANT} hunk 6/6: conflicts" in r.stdout
    assert "series of 0c1e57098 on 0c1e57098:\n  0001-qpatch-hook.patch  applies\n" in r.stdout
    assert r.stdout.endswith("nothing changed; run again with --apply to move the checkout\n")
    assert "policy:    a" in run("status", "--dir", d).stdout
    r = run("rebase", "--to", "0c1e57098", "--apply", "--dir", d)
    assert f"moved {d} to pin 0c1e57098 (pristine {upstream.c49bf[:12]})" in r.stdout
    r = run("status", "--dir", d)
    assert "pin:       0c1e57098 (family current," in r.stdout and "HEAD:      " in r.stdout
    assert "(pristine commit)" in r.stdout


def test_unknown_pin_and_missing_checkout(tmp_path):
    r = run("fetch", "--pin", "nope", "--dir", tmp_path / "x", ok=False)
    assert r.exit_code == 2 and "error: unknown pin 'nope'" in r.stderr and "4227c9be" in r.stderr
    r = run("status", "--dir", tmp_path / "x", ok=False)
    assert r.exit_code == 5 and "no checkout at" in r.stderr and "qpatch fetch" in r.stderr


def test_pins_lists_the_shipped_pins():
    out = run("pins").stdout
    assert out.splitlines()[0] == "0c1e57098   family current    0c1e57098bba  (default)"
    assert "4227c9be    family b6700      4227c9be4268" in out
    assert "b6700       family b6700      tag b6700 3df2244df40c" in out
    assert "ik-55d3c05b family ik_llama   55d3c05bf7b3" in out


def test_fresh_offline_machine_fetches_both_pins_from_the_sdists(upstream, tmp_path, monkeypatch):
    # GitHub unreachable: the git remote's probe goes to a proxy that refuses, so auto falls back
    # to the sdists (which the `upstream` fixture has downloaded into the cache, proxy-free).
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    d = tmp_path / "llama.cpp"
    r = run("fetch", "--pin", "4227c9be", "--dir", d)
    assert r.stdout.startswith("skipped git https://github.com/ggml-org/llama.cpp: ")
    assert f"fetched pin 4227c9be into {d} from sdist llama-cpp-python==0.3.16 (vendor/llama.cpp)" in r.stdout
    assert "pristine commit dfa1a09efc578ae56bf91b4bff39841f470b9ac2" in r.stdout
    assert "source:    sdist llama-cpp-python==0.3.16" in run("status", "--dir", d).stdout
    d2 = tmp_path / "llama.cpp-0c1e57098"
    r = run("fetch", "--dir", d2)  # the default pin
    assert "from sdist llama-cpp-python==0.3.36 (vendor/llama.cpp)" in r.stdout
    assert "pin:       0c1e57098" in run("status", "--dir", d2).stdout
