"""qpatch fetch: from a git remote (by commit, by tag), a mirror, an sdist; offline fails fast; hashes verified."""

import dataclasses
import time

import git
import pytest
from helpers.checkout_fixtures import QUANT

from qpatch.checkout import sources
from qpatch.checkout.repo import Checkout
from qpatch.errors import CheckoutError, SourceError
from qpatch.families.pins import Source, load_pin


def _head(c: Checkout) -> str:
    return c.repo.head.commit.hexsha


def test_clone_by_commit(upstream, tmp_path):
    pin = upstream.pin("0c1e57098")
    assert not pin.tag  # fetched by its commit id
    c = Checkout(tmp_path / "co")
    r = c.fetch(pin, source="git")
    assert r.created and r.source == f"git {upstream.url}"
    assert _head(c) == c.pristine_commit == upstream.c49bf
    st = c.status()
    assert (st.pin, st.family, st.dirty, st.branch) == ("0c1e57098", "current", False, None)
    assert (c.path / QUANT).read_text() == upstream.show(upstream.c49bf, QUANT)


def test_clone_by_tag_verified_by_commit_when_no_hash_is_recorded(upstream, tmp_path):
    pin = upstream.pin("b6700")
    assert pin.tag == "b6700" and pin.rev == "refs/tags/b6700" and not pin.file_hashes
    c = Checkout(tmp_path / "co")
    c.fetch(pin, source="git")
    assert c.pristine_commit == upstream.c4227
    # The tag resolving to another commit than the pin records is caught.
    wrong = dataclasses.replace(pin, commit=upstream.c49bf)
    with pytest.raises(SourceError, match="is commit .* the pin says"):
        Checkout(tmp_path / "co2").fetch(wrong, source="git")
    assert not (tmp_path / "co2").exists()


def test_fetch_from_mirror(upstream, tmp_path):
    c = Checkout(tmp_path / "co")
    r = c.fetch(upstream.pin("4227c9be"), source=f"mirror:{upstream.path}")
    assert r.source == f"mirror {upstream.path}"
    assert c.pristine_commit == upstream.c4227
    assert c.fetch(upstream.pin("4227c9be")).created is False  # a second fetch is a verified no-op


def test_sdist_import_is_the_recorded_reproducible_commit(upstream):
    # The fixture imported both sdists through qpatch.sources, which checks each import against
    # the commit id recorded in pin.toml: the same id on every machine proves reproducibility.
    repo = git.Repo(upstream.path)
    for name, commit in (("4227c9be", upstream.c4227), ("0c1e57098", "refs/imports/0c1e57098")):
        src = next(s for s in load_pin(name).sources if s.kind == "sdist")
        assert repo.commit(commit).hexsha == src.import_commit
        assert repo.commit(commit).author.email == "qpatch@localhost"
        assert repo.commit(commit).authored_date == repo.commit(commit).committed_date == 946684800


def test_wrong_content_is_caught_and_leaves_nothing(upstream, tmp_path):
    pin = upstream.pin("4227c9be", file_hashes=((QUANT, "0" * 64),))
    with pytest.raises(SourceError, match=f"{QUANT} has sha256 .* the pin records 0000"):
        Checkout(tmp_path / "co").fetch(pin, source=f"mirror:{upstream.path}")
    # 4227c9be's content under 0c1e57098's name: the hash check is what catches it.
    wrong = dataclasses.replace(upstream.pin("0c1e57098"), commit=upstream.c4227)
    with pytest.raises(SourceError, match="not pin 0c1e57098"):
        Checkout(tmp_path / "co").fetch(wrong, source="git")
    assert not (tmp_path / "co").exists() and list(tmp_path.iterdir()) == []


def test_auto_skips_an_unreachable_remote_fast(upstream, tmp_path):
    offline = Source(kind="git", url="https://qpatch-offline.invalid/llama.cpp")
    pin = dataclasses.replace(upstream.pin("4227c9be"), sources=(offline, Source(kind="git", url=upstream.url)))
    t0 = time.monotonic()
    r = Checkout(tmp_path / "co").fetch(pin)
    assert time.monotonic() - t0 < 30
    assert r.source == f"git {upstream.url}"
    assert r.tried[0][0] == f"git {offline.url}" and "unreachable" in r.tried[0][1]


def test_probe_gives_up_within_its_timeout(monkeypatch):
    # A proxy that refuses, and a black-hole address: both fail in about the timeout, never hang.
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    with pytest.raises(SourceError, match="via proxy 127.0.0.1:9"):
        sources.probe("https://github.com/ggml-org/llama.cpp", timeout=2)
    monkeypatch.delenv("https_proxy")
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="unreachable"):
        sources.probe("https://10.255.255.1/llama.cpp", timeout=1)
    assert time.monotonic() - t0 < 3


def test_corrupt_archive_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("QPATCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "sdist").mkdir(parents=True)
    (tmp_path / "cache" / "sdist" / "llama_cpp_python-0.3.16.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(SourceError, match="sha256 .* is not the pin's") as e:
        Checkout(tmp_path / "co").fetch(load_pin("4227c9be"), source="sdist")
    assert "delete it" in e.value.hint
    assert not (tmp_path / "co").exists()


def test_fetch_refuses_a_foreign_directory_and_another_pin(upstream, checkout, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(CheckoutError, match="exists and is not a qpatch checkout"):
        Checkout(tmp_path / "mine").fetch(upstream.pin("4227c9be"), source=f"mirror:{upstream.path}")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    with pytest.raises(CheckoutError, match="already a checkout of pin 4227c9be") as e:
        checkout.fetch(upstream.pin("0c1e57098"))
    assert "qpatch rebase --to 0c1e57098" in e.value.hint


def test_state_lives_in_the_git_dir_and_build_dirs_are_ignored(checkout):
    cfg = (checkout.path / ".git" / "config").read_text()
    assert "[qpatch]" in cfg and f"pristine = {checkout.pristine_commit}" in cfg
    (checkout.path / "build-cpu" / "bin").mkdir(parents=True)
    (checkout.path / "build-cpu" / "bin" / "llama-quantize").write_text("binary")
    (checkout.path / "build-cuda").mkdir()
    (checkout.path / "build-cuda" / "CMakeCache.txt").write_text("cache")
    assert checkout.status().dirty is False
    checkout.ensure_clean()
