"""The `gguf` package's constants (ggml types, block sizes, ftypes) without importing the package.

`import gguf` imports numpy and gguf's reader and writer: ~0.16 s that every `qpatch plan`
would pay, although planning needs only the enums and tables of gguf/constants.py. So that
file is loaded on its own, as `gguf.constants`, and `gguf` itself is registered as a lazy
module (importlib.util.LazyLoader): the first use of anything else from it (`import gguf`,
`from gguf import GGUFReader`) runs the package as usual, and the package then reuses this
very constants module, so every enum is the same class whichever way it was imported.
"""

from __future__ import annotations

import importlib.util
import sys


def _constants():
    if "gguf" in sys.modules:  # already imported by someone: use it as is
        import gguf.constants

        return gguf.constants
    spec = importlib.util.find_spec("gguf")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("qpatch needs the gguf package (pip install gguf)")
    lazy = importlib.util.spec_from_loader("gguf", importlib.util.LazyLoader(spec.loader), origin=spec.origin,
                                           is_package=True)
    lazy.submodule_search_locations = spec.submodule_search_locations
    lazy.has_location = spec.has_location
    pkg = importlib.util.module_from_spec(lazy)
    sys.modules["gguf"] = pkg
    lazy.loader.exec_module(pkg)  # deferred until first use
    cspec = importlib.util.spec_from_file_location("gguf.constants",
                                                   f"{spec.submodule_search_locations[0]}/constants.py")
    mod = importlib.util.module_from_spec(cspec)
    sys.modules["gguf.constants"] = mod
    cspec.loader.exec_module(mod)
    pkg.constants = mod  # kept when the package runs (LazyLoader keeps attributes set before)
    return mod


_c = _constants()
GGUFValueType = _c.GGUFValueType
TENSOR_NAMES = _c.TENSOR_NAMES  # MODEL_TENSOR -> name pattern: the tensor kinds llama.cpp knows
