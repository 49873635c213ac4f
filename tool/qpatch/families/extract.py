"""Extract a pin family's type and ftype catalogue from the pin's own source tree.

Nothing here is hand-copied: ggml type ids come from `ggml/include/ggml.h`, block sizes and bytes
per block from the pin's vendored `gguf-py/gguf/constants.py` (`GGML_QUANT_SIZES`), ftype ids from
`include/llama.h`, the ftypes llama-quantize accepts (and their order and aliases) from
`QUANT_OPTIONS` in `tools/quantize/quantize.cpp` (`examples/quantize/` in older trees and in
ik_llama.cpp), each ftype's default type from the default-type switch in `src/llama-quant.cpp`
(`src/llama-quantize.cpp` in ik_llama.cpp), and per-row metadata bytes (ik_llama.cpp's
`row_meta_size`, absent from gguf-py) from the type traits in `ggml/src/ggml.c`. `make catalogues` writes each family's
`catalogue.json` from a fetched checkout; tests/test_catalogue.py checks the files against the
pins' sources.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

_GGML_TYPE = re.compile(r"^\s*GGML_TYPE_(\w+)\s*=\s*(\d+)\s*,", re.M)
_FTYPE = re.compile(r"^\s*LLAMA_FTYPE_(\w+)\s*=\s*(\d+)\s*,", re.M)
_QUANT_OPTION = re.compile(r'\{\s*"(\w+)"\s*,\s*LLAMA_FTYPE_(\w+)\s*,\s*"([^"]*)"')
# `case LLAMA_FTYPE_X: default_type = GGML_TYPE_Y; break;` (b6700) or `case LLAMA_FTYPE_X: return GGML_TYPE_Y;`
_TRAIT = re.compile(r"\[GGML_TYPE_(\w+)\]\s*=\s*\{(.*?)\n\s*\},", re.S)
_ROW_META = re.compile(r"\.row_meta_size\s*=\s*(\d+)\s*,")
_TYPE_NAME = re.compile(r'\.type_name\s*=\s*"([^"]+)"')
_DEFAULT_CASE = re.compile(r"case\s+LLAMA_FTYPE_(\w+)\s*:\s*(?:(?:default_type\s*=|return)\s*GGML_TYPE_(\w+))?")


def _vendored_constants(tree: Path):
    """The pin's own gguf-py/gguf/constants.py, loaded as a private module (it imports only the stdlib)."""
    path = tree / "gguf-py/gguf/constants.py"
    spec = importlib.util.spec_from_file_location(f"_qpatch_pin_constants_{abs(hash(str(path)))}", path)
    assert spec is not None and spec.loader is not None  # a .py path always has a spec and a loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses in it look their module up
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[spec.name]
    return mod


def _block(text: str, start: str, path: Path) -> str:
    i = text.find(start)
    if i < 0:
        raise ValueError(f"{path}: '{start}' not found")
    j = text.find("}", i)
    return text[i:j]


def _default_switch(text: str, path: Path) -> dict[str, str]:
    """ftype enum name -> default ggml type name, following case fall-through."""
    starts = [m.start() for m in re.finditer(r"switch \((?:params->)?ftype\) \{", text)]
    head = r"switch \((?:params->)?ftype\) \{\s*case LLAMA_FTYPE_MOSTLY_Q4_0:"
    i = next((i for i in starts if re.match(head, text[i:])), -1)
    if i < 0:
        raise ValueError(f"{path}: no default-type switch over llama ftypes")
    body = text[i:text.find("default:", i)]
    out, pending = {}, []
    for ftype, gtype in _DEFAULT_CASE.findall(body):
        pending.append(ftype)
        if gtype:
            for f in pending:
                out[f] = gtype
            pending = []
    return out


def _traits(tree: Path) -> tuple[dict[str, int], dict[str, str]]:
    """From ggml.c's type traits: type -> bytes of per-row metadata (scales stored once per row,
    where the pin has them), and type -> ggml_type_name (what ik_llama.cpp's options match exactly)."""
    path = tree / "ggml/src/ggml.c"
    meta, names = {}, {}
    for name, body in _TRAIT.findall(path.read_text()):
        m = _ROW_META.search(body)
        if m and int(m.group(1)):
            meta[name] = int(m.group(1))
        m = _TYPE_NAME.search(body)
        if m:
            names[name] = m.group(1)
    return meta, names


def extract(tree: Path) -> dict:
    tree = Path(tree)
    ggml_h = tree / "ggml/include/ggml.h"
    types = {n: int(v) for n, v in _GGML_TYPE.findall(_block(ggml_h.read_text(), "enum ggml_type {", ggml_h))}
    types.pop("COUNT", None)
    sizes = {t.name: (int(b), int(s)) for t, (b, s) in _vendored_constants(tree).GGML_QUANT_SIZES.items()}
    llama_h = tree / "include/llama.h"
    fids = {n: int(v) for n, v in _FTYPE.findall(_block(llama_h.read_text(), "enum llama_ftype {", llama_h))}
    qpath = next(p for p in (tree / "tools/quantize/quantize.cpp", tree / "examples/quantize/quantize.cpp")
                 if p.is_file())
    options = _QUANT_OPTION.findall(qpath.read_text())
    quant = next(p for p in (tree / "src/llama-quant.cpp", tree / "src/llama-quantize.cpp") if p.is_file())
    defaults = _default_switch(quant.read_text(), quant)
    ftypes, aliases = [], {}
    by_enum: dict[str, str] = {}
    for name, enum, desc in options:
        if desc.strip().startswith("alias for"):
            aliases[name] = desc.strip().split()[-1]
            continue
        default = "F32" if name == "COPY" else defaults[enum]
        ftypes.append({"name": name, "enum": enum, "id": fids[enum], "default": default,
                       **({"copy": True} if name == "COPY" else {})})
        by_enum.setdefault(enum, name)
    meta, ggml_names = _traits(tree)
    missing = sorted({f["default"] for f in ftypes} - set(types))
    if missing:
        raise ValueError(f"{quant}: default types {missing} are not ggml types of {ggml_h}")
    return {
        "source": "extracted from the pin's ggml.h, ggml.c, gguf-py constants.py, llama.h, quantize.cpp, "
                  "llama-quant.cpp",
        "types": [{"name": n, "id": i, "block": sizes[n][0], "bytes": sizes[n][1],
                   **({"row_meta": meta[n]} if n in meta else {}), "ggml_name": ggml_names.get(n, n.lower())}
                  for n, i in sorted(types.items(), key=lambda kv: kv[1]) if n in sizes],
        "ftypes": ftypes,
        "aliases": {k: by_enum.get(v, v) for k, v in sorted(aliases.items())},
    }


def dumps(cat: dict) -> str:
    return json.dumps(cat, indent=1) + "\n"


if __name__ == "__main__":
    tree, out = sys.argv[1], sys.argv[2]
    Path(out).write_text(dumps(extract(Path(tree))))
    print(f"wrote {out}")
