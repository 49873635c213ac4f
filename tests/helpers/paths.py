"""Paths the tests share: the repository, and shared/ beside it (as in CI's clone)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "reference" / "golden"
