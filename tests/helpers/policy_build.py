"""One patched llama.cpp checkout for the policy proofs, switched between policies incrementally.

It is made the way a user makes one: `Checkout.fetch` of the pin (from the sdist), then
`qpatch apply` semantics (the pin's hook series + the rendered header, committed on a
branch) and `qpatch.build`. Switching policy rewrites only the generated header, so each
switch recompiles one translation unit (~6 s), with the pin's own warning flags: a warning in the
hook or the generated header fails the switch (this replaced a separate -Werror compile test).
Cached under ~/.cache/qpatch/test/, keyed by pin; tests that use it share one xdist group, so one
worker owns it at a time.
"""

from __future__ import annotations

from pathlib import Path

from helpers.cachelock import file_lock
from qpatch.build import cmake
from qpatch.cache import cache_root
from qpatch.checkout import apply
from qpatch.checkout.repo import Checkout
from qpatch.families.pins import load_pin
from qpatch.policy import loader
from qpatch.policy.model import Policy

PIN = "4227c9be"


class PatchedBuild:
    def __init__(self, pin: str = PIN):
        self.pin = load_pin(pin)
        self.root = cache_root() / "test" / f"patched-{pin}"
        self.path = self.root / "llama.cpp"
        self.lock = self.root / "lock"
        self.current: str | None = None

    def ensure(self):
        with file_lock(self.lock):
            co = Checkout(self.path)
            if not (self.path / ".git").exists():
                co.fetch(self.pin, source="sdist")
            co.close()

    def switch(self, policy: Policy | str) -> Path:
        """Apply `policy` (a name or a Policy object), rebuild, and return llama-quantize's path."""
        pol = loader.load(policy) if isinstance(policy, str) else policy
        with file_lock(self.lock):
            apply.apply(pol, self.path)  # as `qpatch apply` does it, the record included
            bindir = cmake.build(self.path, "cpu", ["llama-quantize"], progress=None)
            log = (cmake.build_dir(self.path, "cpu") / "qpatch-build.log").read_text(errors="replace")
        # The pin's own warning flags (-Wall -Wextra ...) are on: the hook and the generated header
        # must compile without a warning, whatever the policy (every switch that recompiled says so).
        warnings = [ln for ln in log.splitlines() if ": warning:" in ln and "llama-quant" in ln]
        assert not warnings, f"{self.pin.name} {pol.name}: the generated code compiles with warnings:\n" + \
            "\n".join(warnings[:10])
        self.current = pol.name
        return bindir / "llama-quantize"
