"""Checkout.apply / reset / status / diff, and the safety rules: nothing of the user's is ever lost."""

import git
import pytest
from helpers.checkout_fixtures import QUANT, snapshot

from qpatch.checkout.repo import Checkout
from qpatch.codegen.render import GENERATED_PATH as GEN
from qpatch.errors import CheckoutError


@pytest.fixture
def hooked(upstream):
    """The test remote's pin 4227c9be with its real series (the hook patch)."""
    return upstream.pin("4227c9be")


def test_apply_status_diff_reset_round_trip(checkout, hooked):
    pristine = checkout.pristine_commit
    assert checkout.apply(hooked, {GEN: "// policy a\n"}, "qpatch/a", "qpatch: policy a") is True
    st = checkout.status()
    assert (st.branch, st.policy, st.patches, st.generated, st.dirty) == \
        ("qpatch/a", "a", ("0001-qpatch-hook.patch",), (GEN,), False)
    assert (checkout.path / GEN).read_text() == "// policy a\n"
    assert "qpatch::choose" in (checkout.path / QUANT).read_text()
    d = checkout.diff()
    assert f"+++ b/{GEN}" in d and "+// policy a" in d and f"+++ b/{QUANT}" in d
    assert "2 files changed" in checkout.diff(stat=True)
    log = checkout.repo.git.log("--format=%s|%an <%ae>", f"{pristine}..HEAD").splitlines()
    assert log == ["qpatch: policy a|qpatch <qpatch@localhost>",
                   "qpatch hook: let a generated policy choose tensor types|qpatch <qpatch@localhost>"]

    assert checkout.reset() is True
    st = checkout.status()
    assert (st.head, st.branch, st.patches, st.policy, st.dirty) == (pristine, None, (), None, False)
    assert not (checkout.path / GEN).exists()
    assert checkout.diff() == ""
    assert checkout.reset() is False


def test_reapply_is_a_noop_and_policies_switch_cleanly(checkout, hooked):
    assert checkout.apply(hooked, {GEN: "// a\n"}, "qpatch/a", "qpatch: a") is True
    tip = checkout.repo.head.commit.hexsha
    before = snapshot(checkout)
    assert checkout.apply(hooked, {GEN: "// a\n"}, "qpatch/a", "qpatch: a") is False
    assert snapshot(checkout) == before
    assert checkout.apply(hooked, {GEN: "// b\n", "src/other.inc": "// x\n"}, "qpatch/b", "qpatch: b") is True
    assert (checkout.status().branch, (checkout.path / GEN).read_text()) == ("qpatch/b", "// b\n")
    assert checkout.apply(hooked, {GEN: "// a\n"}, "qpatch/a", "qpatch: a") is True  # switches back
    assert checkout.repo.head.commit.hexsha == tip and not (checkout.path / "src/other.inc").exists()
    # New content for the current branch: rebuilt from the pristine commit, not stacked.
    assert checkout.apply(hooked, {GEN: "// a2\n"}, "qpatch/a", "qpatch: a") is True
    assert checkout.repo.git.rev_list("--count", f"{checkout.pristine_commit}..HEAD") == "2"
    assert sorted(b.name for b in checkout.repo.branches) == ["qpatch/a", "qpatch/b"]


def test_commits_are_reproducible(checkout, upstream, hooked, tmp_path):
    checkout.apply(hooked, {GEN: "// a\n"}, "qpatch/a", "qpatch: a")
    other = Checkout(tmp_path / "other")
    other.fetch(hooked, source=f"mirror:{upstream.path}")
    other.apply(hooked, {GEN: "// a\n"}, "qpatch/a", "qpatch: a")
    assert other.repo.head.commit.hexsha == checkout.repo.head.commit.hexsha


@pytest.mark.parametrize("action", ["apply", "reset", "rebase"])
def test_dirty_tree_is_refused_with_files_named(checkout, hooked, upstream, action):
    checkout.apply(hooked, {GEN: "// a\n"}, "qpatch/a", "qpatch: a")
    (checkout.path / QUANT).write_text("my edit\n")
    (checkout.path / "notes.txt").write_text("my notes\n")
    (checkout.path / "src" / "new-dir").mkdir()
    (checkout.path / "src" / "new-dir" / "mine.cpp").write_text("int x;\n")
    before = snapshot(checkout)
    with pytest.raises(CheckoutError) as e:
        if action == "apply":
            checkout.apply(hooked, {GEN: "// b\n"}, "qpatch/b", "qpatch: b")
        elif action == "reset":
            checkout.reset()
        else:
            checkout.rebase(upstream.pin("0c1e57098"), source="git", current=hooked)
    msg = str(e.value)
    assert f"modified   {QUANT}" in msg and "untracked  notes.txt" in msg and "src/new-dir/mine.cpp" in msg
    assert "stash push --include-untracked" in e.value.hint and "commit" in e.value.hint
    assert snapshot(checkout) == before
    assert (checkout.path / QUANT).read_text() == "my edit\n"


def test_staged_change_is_refused(checkout, hooked):
    (checkout.path / "README.md").write_text("staged\n")
    checkout.repo.git.add("README.md")
    with pytest.raises(CheckoutError, match="modified   README.md"):
        checkout.apply(hooked, {GEN: "// a\n"}, "qpatch/a", "qpatch: a")
    assert checkout.repo.git.diff("--cached", "--name-only") == "README.md"


def test_ignored_build_dirs_are_kept(checkout, hooked):
    (checkout.path / "build-cpu" / "bin").mkdir(parents=True)
    (checkout.path / "build-cpu" / "bin" / "llama-quantize").write_text("binary")
    assert checkout.apply(hooked, {GEN: "// a\n"}, "qpatch/a", "qpatch: a")
    assert checkout.reset()
    assert (checkout.path / "build-cpu" / "bin" / "llama-quantize").read_text() == "binary"


def test_commits_on_no_branch_are_not_lost(checkout, hooked):
    (checkout.path / "README.md").write_text("my work\n")
    r = checkout.repo
    r.git.execute(["git", "-c", "user.name=Me", "-c", "user.email=me@example.com", "commit", "-qam", "my work"])
    mine = r.head.commit.hexsha
    for action in (checkout.reset, lambda: checkout.apply(hooked, {GEN: "x\n"}, "qpatch/a", "m")):
        with pytest.raises(CheckoutError, match="commit\\(s\\) that no branch keeps") as e:
            action()
        assert "git -C" in e.value.hint and "branch my-work" in e.value.hint
        assert r.head.commit.hexsha == mine


def test_user_commits_on_a_qpatch_branch_are_not_lost(checkout, hooked):
    checkout.apply(hooked, {GEN: "// a\n"}, "qpatch/a", "qpatch: a")
    r = checkout.repo
    (checkout.path / GEN).write_text("// my tweak\n")
    r.git.execute(["git", "-c", "user.name=Me", "-c", "user.email=me@example.com", "commit", "-qam", "tweak"])
    mine = r.head.commit.hexsha
    with pytest.raises(CheckoutError, match="qpatch/a has 1 commit\\(s\\) not made by qpatch") as e:
        checkout.apply(hooked, {GEN: "// a\n"}, "qpatch/a", "qpatch: a")
    assert "branch -m qpatch/a" in e.value.hint
    assert r.heads["qpatch/a"].commit.hexsha == mine
    st = checkout.status()
    assert st.other_commits == (f"{mine[:12]} tweak",) and not st.dirty
    # Resetting is fine: the branch still holds the commit.
    assert checkout.reset() and r.heads["qpatch/a"].commit.hexsha == mine


def test_failure_while_switching_puts_everything_back(checkout, hooked, monkeypatch):
    checkout.apply(hooked, {GEN: "// a\n"}, "qpatch/a", "qpatch: a")
    before = snapshot(checkout)

    def boom(branch):
        Checkout._checkout_branch(checkout, branch)  # the worktree really moves, then it fails
        raise git.GitCommandError(["git", "checkout"], 1, b"simulated failure")

    monkeypatch.setattr(checkout, "_checkout_branch", boom)
    for branch in ("qpatch/a", "qpatch/b"):  # the current branch moving, and a new one
        with pytest.raises(CheckoutError, match="the checkout is as it was"):
            checkout.apply(hooked, {GEN: "// changed\n"}, branch, "qpatch: changed")
        assert snapshot(checkout) == before


def test_apply_refuses_a_bad_branch_or_path_or_pin(checkout, hooked, upstream):
    from qpatch.errors import UsageError

    with pytest.raises(UsageError, match="not a valid branch name"):
        checkout.apply(hooked, {GEN: ""}, "qpatch/a..b", "m")
    for bad in ("../x", "/etc/x", ".git/config"):
        with pytest.raises(UsageError, match="relative inside the checkout"):
            checkout.apply(hooked, {bad: ""}, "qpatch/a", "m")
    with pytest.raises(CheckoutError, match="not 0c1e57098"):
        checkout.apply(upstream.pin("0c1e57098"), {GEN: ""}, "qpatch/a", "m")
    assert list(checkout.repo.branches) == []
