"""Patch series: parsing, per-patch check (applies / conflicts with file and hunk / already upstream),
all-or-nothing apply, and the rebase report 4227c9be -> 0c1e57098."""

from pathlib import Path

import pytest
from helpers.checkout_fixtures import HOOK_4227, QUANT, make_patch, snapshot, write_series

from qpatch.checkout.patchset import APPLIES, CONFLICTS, MISSING, UPSTREAM, read_patch
from qpatch.checkout.repo import Checkout
from qpatch.codegen.render import GENERATED_PATH as GEN
from qpatch.errors import CheckoutError, UsageError
from qpatch.families.pins import Pin, Source, load_pin, series


def test_series_file_is_quilt_style(tmp_path):
    for n in ("a.patch", "b.patch"):
        (tmp_path / n).write_text("x\n")
    (tmp_path / "series").write_text("# comment\n\na.patch -p1\nb.patch  # trailing comment\n")
    pin = Pin(name="t", commit="0" * 40, sources=(Source(kind="git", url="x"),), patch_dir=tmp_path)
    assert series(pin) == [tmp_path / "a.patch", tmp_path / "b.patch"]
    (tmp_path / "series").write_text("a.patch -p0\n")
    with pytest.raises(UsageError, match="series:1: only '-p1'"):
        series(pin)
    (tmp_path / "series").write_text("missing.patch\n")
    with pytest.raises(UsageError, match="series:1: no such patch missing.patch"):
        series(pin)


def test_shipped_pins_load():
    pins = {n: load_pin(n) for n in ("4227c9be", "0c1e57098", "b6700")}
    assert pins["4227c9be"].family == pins["b6700"].family == "b6700"
    assert pins["0c1e57098"].family == "current"
    assert [s.kind for s in pins["4227c9be"].sources] == ["git", "sdist"]
    assert [s.kind for s in pins["b6700"].sources] == ["git"] and pins["b6700"].tag == "b6700"
    assert not pins["b6700"].file_hashes  # unknown here: verified by commit id (see its pin.toml)
    assert all(dict(p.file_hashes).get(QUANT) for n, p in pins.items() if n != "b6700")
    for p in pins.values():
        for path in series(p):  # every shipped patch has a header
            info = read_patch(path)
            assert info.subject and info.upstream_status, path


def test_read_patch_header_and_hunks(upstream, tmp_path):
    old = upstream.show(upstream.c4227, QUANT)
    p = tmp_path / "0001-x.patch"
    p.write_text(make_patch(old, HOOK_4227, subject="Hook the policy"))
    info = read_patch(p)
    assert info.subject == "Hook the policy"
    assert info.upstream_status == "Inappropriate [test only]"
    assert info.files == (QUANT,)
    assert [(h.index, h.count) for h in info.hunks] == [(1, 2), (2, 2)]
    assert info.hunks[0].header.startswith("@@ -12,")


def _four(upstream, tmp_path, third_breaks: bool) -> Pin:
    old = upstream.show(upstream.c4227, QUANT)
    readme = upstream.show(upstream.c4227, "README.md")
    cmake = upstream.show(upstream.c4227, "CMakeLists.txt")
    third = make_patch(cmake, [("project(", "project( # three\n")], "CMakeLists.txt", subject="Three")
    if third_breaks:
        broken = third.replace("\n include(CheckIncludeFileCXX)", "\n include(Renamed)")  # context mismatch
        assert broken != third
        third = broken
    pdir = write_series(tmp_path / "patches" / "4227c9be", {
        "0001-one.patch": make_patch(readme, [("# llama.cpp", "# llama.cpp (qpatched)")], "README.md", subject="One"),
        "0002-hook.patch": make_patch(old, HOOK_4227, subject="Hook"),
        "0003-three.patch": third,
        "0004-four.patch": make_patch(old, [("static void zeros(", "static void zeros_(")], subject="Four"),
    })
    return upstream.pin("4227c9be", patch_dir=pdir)


def test_all_or_nothing_when_patch_3_of_4_fails(checkout, upstream, tmp_path):
    # From the pristine commit, and from a branch a previous apply made.
    good = _four(upstream, tmp_path / "good", third_breaks=False)
    bad = _four(upstream, tmp_path / "bad", third_breaks=True)
    for start in ("pristine", "applied"):
        if start == "applied":
            assert checkout.apply(good, {GEN: "// a\n"}, "qpatch/a", "qpatch: a")
        before = snapshot(checkout)
        for branch in ("qpatch/a", "qpatch/new"):
            with pytest.raises(CheckoutError) as e:
                checkout.apply(bad, {GEN: "// b\n"}, branch, "qpatch: b")
            msg = str(e.value)
            assert "patch 0003-three.patch of pin 4227c9be: conflicts; nothing was changed" in msg
            assert "CMakeLists.txt hunk 1/1" in msg
            assert snapshot(checkout) == before
    st = checkout.status()
    assert st.patches == ("0001-one.patch", "0002-hook.patch", "0003-three.patch", "0004-four.patch")


def test_check_reports_applies_conflicts_and_already_upstream(checkout, upstream, tmp_path):
    old = upstream.show(upstream.c4227, QUANT)
    hook = make_patch(old, HOOK_4227, subject="Hook")
    two = make_patch(old, [("static void zeros(", "static void zeros_(1, "),
                           ("static size_t llama_tensor_quantize_impl(", "static size_t quantize_impl_(")],
                     subject="Two hunks")
    half = two.replace("\n     if (nthread < 2) {", "\n     if (nthread < 4) {")  # second hunk's context broken
    assert half != two
    pdir = write_series(tmp_path / "p", {
        "0001-hook.patch": hook,
        "0002-again.patch": make_patch(old, HOOK_4227[:1], subject="Already there after 0001"),
        "0003-half.patch": half,
        "0004-gone.patch": make_patch("a\n", [("a\n", "b\n")], "src/removed-upstream.cpp", subject="Gone"),
    })
    results = checkout.check_patches(upstream.pin("4227c9be", patch_dir=pdir))
    assert [r.state for r in results] == [APPLIES, UPSTREAM, CONFLICTS, CONFLICTS]
    assert [(h.hunk.file, h.hunk.index, h.state) for h in results[2].hunks] == \
        [(QUANT, 1, APPLIES), (QUANT, 2, CONFLICTS)]
    assert [(h.hunk.file, h.state) for h in results[3].hunks] == [("src/removed-upstream.cpp", MISSING)]
    assert checkout.status().head == checkout.pristine_commit  # checking changed nothing


def test_rebase_report_4227c9be_to_0c1e57098(checkout, upstream):
    # The real hook patches: 4227c9be's conflicts on 0c1e57098, 0c1e57098's own applies.
    cur, to = upstream.pin("4227c9be"), upstream.pin("0c1e57098")
    checkout.apply(cur, {GEN: "// a\n"}, "qpatch/a", "qpatch: a")
    before = snapshot(checkout)
    report = checkout.rebase_report(to, source="git")
    after = snapshot(checkout)
    assert {k: after[k] for k in ("HEAD", "head_commit", "status", "index", "files")} == \
        {k: before[k] for k in ("HEAD", "head_commit", "status", "index", "files")}
    assert report.target == upstream.c49bf and report.ok
    assert [r.state for r in report.current] == [CONFLICTS]
    hunks = report.current[0].hunks
    assert len(hunks) == 6 and {h.state for h in hunks} == {CONFLICTS}
    assert [r.state for r in report.own] == [APPLIES]
    text = report.describe()
    assert f"  0001-qpatch-hook.patch  conflicts\n      {QUANT} hunk 1/6: conflicts" in text
    assert "hunk 3/6: conflicts         @@ -433,6 +437,9 @@ static ggml_type llama_tensor_get_type(" in text
    assert text.endswith("verdict: 0c1e57098 is usable: its own series applies")

    (checkout.path / "mine.txt").write_text("x")
    with pytest.raises(CheckoutError, match="uncommitted"):  # --apply has the same safety rule
        checkout.rebase(to)
    (checkout.path / "mine.txt").unlink()
    checkout.rebase(to)
    st = checkout.status()
    assert (st.pin, st.family, st.pristine, st.head, st.dirty) == \
        ("0c1e57098", "current", upstream.c49bf, upstream.c49bf, False)
    assert checkout.apply(to, {GEN: "// a\n"}, "qpatch/a", "qpatch: a")  # rebuilt on the new pin
    assert checkout.status().patches == ("0001-qpatch-hook.patch",)
    assert "qpatch::choose" in (checkout.path / QUANT).read_text()


def test_rebase_refuses_when_the_new_pins_series_does_not_apply(checkout, upstream, tmp_path):
    wrong = write_series(tmp_path / "p49", {"0001-hook.patch": make_patch(
        upstream.show(upstream.c4227, QUANT), HOOK_4227, subject="4227's hook, wrongly listed")})
    to = upstream.pin("0c1e57098", patch_dir=wrong)
    with pytest.raises(CheckoutError, match="series does not apply"):
        checkout.rebase(to, current=upstream.pin("4227c9be", patch_dir=Path(tmp_path / "none")))
    assert checkout.status().pin == "4227c9be" and checkout.repo.head.commit.hexsha == upstream.c4227


def test_check_another_pin_needs_only_objects(checkout, upstream):
    results = checkout.check_patches(upstream.pin("0c1e57098"), source=f"mirror:{upstream.path}")
    assert [r.state for r in results] == [APPLIES]
    assert Checkout(checkout.path).status().pin == "4227c9be"
    assert checkout.repo.head.commit.hexsha == upstream.c4227
