"""The package tree is the data flow: each stage imports only from the stages before it, so the import
graph has no circle, and only families/ names a pin family or a pin."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from qpatch import families
from qpatch.families.pins import available_pins

PACKAGE = Path(__file__).resolve().parents[1] / "tool" / "qpatch"

# the flow, first to last; a module may import its own stage, the shared modules, and earlier stages
STAGES = ("gguf", "policy", "predict", "families", "codegen", "checkout", "build", "job", "recipes",
          "quantize", "quality", "shelves", "measure", "cli", "__main__")
SHARED = ("__init__", "errors", "progress", "cache", "shipped", "files")


def stage_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = ("qpatch",) + f.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)] = f
    return out


def imports(path: Path, known: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, qpatch module) for every import in the file, function-level ones too; not those under
    `if TYPE_CHECKING:` (names for annotations: a later stage's type passed in is no dependency)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
                   for stmt in node.body for n in ast.walk(stmt)}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "qpatch":
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.append((node.lineno, sub if sub in known else node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "qpatch"]
    return out


def test_every_module_belongs_to_a_stage():
    for mod in modules():
        assert stage_of(mod) in STAGES + SHARED, f"{mod}: not in a stage of the flow (tests/test_layout.py)"


def test_stages_import_only_earlier_stages():
    known = modules()
    rank = {s: i for i, s in enumerate(STAGES)}
    bad = []
    for mod, path in known.items():
        here = stage_of(mod)
        for line, target in imports(path, known):
            there = stage_of(target)
            if there in SHARED or there == here:
                continue
            if here in SHARED or rank[there] > rank[here]:
                bad.append(f"{path.relative_to(PACKAGE)}:{line}: {here} imports {target} (stage {there})")
    assert not bad, "imports against the flow:\n" + "\n".join(bad)


def test_no_import_circle_between_modules():
    known = modules()
    graph = {m: sorted({t for _, t in imports(p, known) if t in known and t != m}) for m, p in known.items()}
    # a package's __init__ importing its own modules is no circle of the flow
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_only_families_name_a_family_or_a_pin():
    names = set(families.names()) | set(available_pins())
    # a name as a string literal or an attribute: what a test of a family's name looks like
    pattern = re.compile(r"""["'](%s)["']""" % "|".join(re.escape(n) for n in sorted(names)))
    bad = []
    for mod, path in modules().items():
        if stage_of(mod) == "families":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                bad.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert not bad, "family or pin named outside families/:\n" + "\n".join(bad)


@pytest.mark.parametrize("stage", [s for s in STAGES if (PACKAGE / s).is_dir()])
def test_each_stage_states_its_contract(stage):
    doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text()))
    assert doc and len(doc.split()) >= 15, f"{stage}/__init__.py: no contract paragraph"


def test_the_command_line_starts_without_the_families():
    """`qpatch --help` lists the commands without reading a family: the job commands' type options come from
    the families' declarations only when click asks for those commands' parameters (bench_cold_start.py)."""
    import subprocess
    import sys

    code = ("import sys; from qpatch.cli import main; sys.argv = ['qpatch', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "loaded = [m for m in sys.modules if m.startswith(('qpatch.families', 'qpatch.predict'))]\n"
            "print(sorted(loaded), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stderr.strip().splitlines()[-1] == "[]", r.stderr


def test_plan_does_not_import_numpy(tmp_path):
    """`qpatch plan` needs gguf's tables, not its reader: importing gguf (and numpy) costs ~0.14 s a run,
    which made plan 0.33 s instead of 0.21 s on the DeepSeek-V3 header (bench/bench_plan.py)."""
    import subprocess
    import sys

    from helpers.zoo import BY_NAME, write_zoo

    model, _ = write_zoo(tmp_path, [BY_NAME["deepseek2-mla-10L"]])["deepseek2-mla-10L"]
    code = ("import sys; from qpatch.cli import main; sys.argv = ['qpatch', 'plan', sys.argv[1], '-f', 'Q4_K_M']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('numpy' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, check=True)
    assert r.stderr.strip().splitlines()[-1] == "False", r.stderr


def _option_words() -> tuple[set[str], set[str]]:
    """Every family's option flags (each per-kind option spelled out) and option names."""
    from qpatch.predict.options import PerKind

    flags, names = set(), set()
    for name in families.names():
        for o in families.get(name).options:
            names.add(o.name)
            if isinstance(o, PerKind):
                flags |= {o.flag.format(k.replace("_", "-")) for k in o.choices}
            else:
                flags.add(o.flag)
    return flags, names


# where options are spelled: the families' declarations, the shared forms and mainline's own (predict/options.py),
# and the command line, which offers them
OPTION_HOMES = ("families", "cli")


def test_only_families_test_a_family_flag():
    """What a family's binary calls its options is the family's business: outside families/ (and the CLI,
    which spells the user's options), no code compares anything with one of their flags. Ask the family's
    declarations instead (families/<name>/options.py)."""
    flags, _ = _option_words()
    alt = "|".join(re.escape(f) for f in sorted(flags))
    pattern = re.compile(r"""(==|!=|\bin)\s*["'](%s)["']|["'](%s)["']\s*(==|!=)""" % (alt, alt))
    bad = []
    for mod, path in modules().items():
        if stage_of(mod) in OPTION_HOMES:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                bad.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert not bad, "a family's flag tested outside families/:\n" + "\n".join(bad)


def test_only_families_name_an_option():
    """No module outside the options' homes names one of them, as a string, an attribute or a keyword: Job,
    report and export read the declarations (issue 19: a new option is a line in one family's options.py)."""
    _, names = _option_words()
    alt = "|".join(re.escape(n) for n in sorted(names))
    compound = "|".join(re.escape(n) for n in sorted(names) if "_" in n)  # `pure=` is also dask's keyword
    pattern = re.compile(r"""["'](%s)["']|\.(%s)\b|\b(%s)=""" % (alt, alt, compound))
    bad = []
    for mod, path in modules().items():
        if stage_of(mod) in OPTION_HOMES or mod == "qpatch.predict.options":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                bad.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert not bad, "an option named outside its family:\n" + "\n".join(bad)


def test_every_family_is_checked_when_it_registers(tmp_path):
    """A family folder is validated once, when first asked for, against what the stages read of it."""
    from qpatch.families.base import Family
    from qpatch.predict.options import PURE, Switch

    for name in families.names():
        assert families.check(families.get(name), PACKAGE / "families" / name) == []

    class Half(Family):  # a new family's first draft: no walk(), no overrides, a flag that is not one
        name = "draft"
        options = (PURE, Switch("verbose", "v", "not a flag"))
        imatrix_formats = ("dat",)

    Half.__abstractmethods__ = frozenset()  # let the draft be made, to be checked
    (tmp_path / "draft").mkdir()
    problems = families.check(Half(), tmp_path / "draft")
    assert any("does not define override_result(), walk()" in p for p in problems), problems
    assert any("no catalogue.json" in p for p in problems) and any("no policy.h.j2" in p for p in problems)
    assert any("no options.py" in p for p in problems)
    assert any("exactly one option must be the Overrides" in p for p in problems)
    assert any("'v' is no llama-quantize flag" in p for p in problems) and any("imatrix_formats" in p for p in problems)
    assert families.check(object(), tmp_path / "draft") == ["its predict.py defines no FAMILY = <a Family subclass>()"]
