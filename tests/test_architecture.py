"The house drawn from the code's own imports: every module imports only modules built in earlier notebooks, no circles."
import ast, re
from pathlib import Path

import anydoor

ROOT = Path(anydoor.__file__).parent

# Imports inside a function that reach a later notebook, each on purpose (a test fails if one appears or goes):
UPWARD_LAZY = {
    ("anydoor.pipeline", "anydoor.convert"),   # AnyDoorPipeline.from_single_file: diffusers' name for the converter
    ("anydoor.judge", "anydoor.evaluate"),     # the judge's own validation crops boxes and scores colour as evaluate does
    ("anydoor.evaluate", "anydoor.pipeline"),  # load_for_evaluation also reads a saved pipeline folder
}


def _modules() -> dict:
    "Module name -> (path, the notebook it is exported from)."
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        if p.name == "_modidx.py": continue
        name = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        nb = re.search(r"File to edit: \S*nbs/(\S+)\.ipynb", p.read_text())
        out[name] = (p, nb.group(1) if nb else None)
    return out


def _imports(name: str, path: Path, modules: dict) -> tuple:
    "(top-level, inside functions): the anydoor modules that `name` imports."
    tree = ast.parse(path.read_text())
    top, lazy = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
            else: base = node.module or ""
            found = {m for m in [base] + [f"{base}.{a.name}" for a in node.names] if m in modules}
        elif isinstance(node, ast.Import): found = {a.name for a in node.names if a.name in modules}
        else: continue
        (top if node in tree.body else lazy).update(found - {name, "anydoor"})
    return top, lazy


def test_every_module_comes_from_a_notebook():
    mods = _modules()
    assert len(mods) > 20
    assert [m for m, (_, nb) in mods.items() if nb is None] == ["anydoor"], "hand-written modules besides __init__"


def test_imports_run_down_the_notebooks_and_never_in_circles():
    mods = _modules()
    upward, graph = set(), {}
    for m, (p, nb) in mods.items():
        if nb is None: continue
        top, lazy = _imports(m, p, mods)
        graph[m] = top
        for t in top | lazy:
            if mods[t][1] is not None and mods[t][1] > nb:          # the notebooks' names sort in build order
                assert t in lazy and t not in top, f"{m} ({nb}) imports {t} ({mods[t][1]}) at module level"
                upward.add((m, t))
    assert upward == UPWARD_LAZY
    # no circle among module-level imports (depth-first search)
    state = {}
    def visit(m, path):
        if state.get(m) == "done": return
        assert state.get(m) != "open", f"import circle: {' -> '.join(path + [m])}"
        state[m] = "open"
        for t in graph.get(m, ()): visit(t, path + [m])
        state[m] = "done"
    for m in graph: visit(m, [])


def test_the_shipped_paths_import_nothing_heavy():
    "`anydoor.shipped` finds the weights without torch models: cli and train import it first."
    mods = _modules()
    top, _ = _imports("anydoor.shipped", *[mods["anydoor.shipped"][0]], mods)
    assert top == set()
    src = mods["anydoor.shipped"][0].read_text()
    assert not re.search(r"^(import|from) (torch|diffusers|transformers)\b", src, re.M)
