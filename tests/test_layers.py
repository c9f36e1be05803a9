"""The package's layers, read from its source with `ast`: imports only point down.

The layers (DESIGN.md), lowest first. A module may import a module of a lower layer, or one in its
own folder at the same layer; never one above. Every import counts, also those inside functions
(which are there only to load a heavy package late, never to dodge a circle), and the graph of
all of them has no cycle. A name that starts with "_" is private to its file: no other file
imports it or reaches it as `module._name`.
"""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minigpt2"

# module (or subpackage) -> layer
LAYERS = {
    "minigpt2.config": 0, "minigpt2.version": 0,
    "minigpt2.weights": 1,
    "minigpt2.tokenizer": 2, "minigpt2.ops": 2,
    "minigpt2.engine": 3,
    "minigpt2.cache": 4, "minigpt2.inputs": 4, "minigpt2.outputs": 4, "minigpt2.quantize": 4,
    "minigpt2.generate": 4, "minigpt2.processors": 4, "minigpt2.beam_search": 4,
    "minigpt2.generation_config": 4,
    "minigpt2.model": 5, "minigpt2.heads": 5,
    "minigpt2.scoring": 6, "minigpt2.verify": 6, "minigpt2.verify_report": 6, "minigpt2.bench": 6, "minigpt2.pipelines": 6,
    "minigpt2.serve": 7,
    "minigpt2.cli": 8,
    "minigpt2.__main__": 9, "minigpt2": 9,
}
# Imported inside a function only: packages that are heavy to load or optional.
LATE_IMPORTS_ALLOWED = {"numba", "numpy", "torch", "transformers", "matplotlib", "requests", "tqdm", "tiktoken",
                        "tiktoken_ext", "tokenizers", "urllib3", "starlette", "uvicorn", "llvmlite"}
MAX_LINES = 500


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module):
    """The layer of a minigpt2 module: its own entry, or its subpackage's."""
    name = module
    while name not in LAYERS:
        if "." not in name:
            raise KeyError(f"{module} has no layer in tests/test_layers.py LAYERS: add it")
        name = name.rsplit(".", 1)[0]
    return LAYERS[name]


def folder_of(module, is_package):
    return module if is_package else module.rsplit(".", 1)[0]


def read_imports(path):
    """[(imported module, [names], line, inside a function?)] of one file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append((alias.name, [], child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                names = [alias.name for alias in child.names]
                # "from minigpt2.engine import amx" imports the module minigpt2.engine.amx
                submodules = [n for n in names if (PACKAGE.parent / (base.replace(".", "/") + f"/{n}.py")).exists()
                              or (PACKAGE.parent / (base.replace(".", "/") + f"/{n}/__init__.py")).exists()]
                for n in submodules:
                    found.append((f"{base}.{n}", [], child.lineno, in_function))
                others = [n for n in names if n not in submodules]
                if others or not submodules:
                    found.append((base, others, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return tree, found


def package_files():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def import_graph():
    """{module: {imported minigpt2 module: line}} and the list of rule violations."""
    graph, problems = {}, []
    for path in package_files():
        here = module_name(path)
        is_package = path.name == "__init__.py"
        tree, imports = read_imports(path)
        edges = graph.setdefault(here, {})
        for target, names, line, in_function in imports:
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            top = target.split(".")[0]
            if top != "minigpt2":
                if in_function and top not in LATE_IMPORTS_ALLOWED:
                    problems.append(f"{where}: imports {target} inside a function (only heavy or optional "
                                    f"packages are imported late)")
                continue
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    problems.append(f"{where}: imports the private name {name} from {target}")
            if target == here:
                continue
            edges[target] = line
            mine, theirs = layer_of(here), layer_of(target)
            same_folder = folder_of(here, is_package) == target.rsplit(".", 1)[0] or (
                is_package and target.startswith(here + "."))
            if theirs > mine or (theirs == mine and not same_folder and not target.startswith(here + ".")):
                problems.append(f"{where}: {here} (layer {mine}) imports {target} (layer {theirs}): "
                                f"imports must point down, or stay in the module's own folder")
        # module._private reached through an imported module
        imported_modules = {alias.asname or alias.name.split(".")[-1]
                            for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                            for alias in node.names
                            if (isinstance(node, ast.Import) and alias.name.startswith("minigpt2"))
                            or (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minigpt2"))}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in imported_modules and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: reaches the private name "
                                f"{node.value.id}.{node.attr}")
    return graph, problems


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(module, stack):
        state[module] = "open"
        for target in graph.get(module, {}):
            if target not in graph:                  # a subpackage name resolved to its __init__
                continue
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target, stack + [target])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in graph:
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_imports_point_down_and_nothing_private_crosses_a_file():
    _, problems = import_graph()
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    graph, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_has_a_layer_and_stays_short():
    for path in package_files():
        layer_of(module_name(path))                      # raises for a module nobody placed
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {lines} lines (at most {MAX_LINES})"


def test_both_backends_provide_the_whole_contract():
    from minigpt2 import engine, ops
    for name in ops.BACKEND_OPS:
        reference = inspect.signature(getattr(ops, name))
        fast = inspect.signature(getattr(engine, name))
        assert list(fast.parameters) == list(reference.parameters), name


def run_python(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_tokenizer_loads_neither_numpy_nor_numba():
    loaded = run_python("import sys\nfrom minigpt2 import GPT2Tokenizer\n"
                        "GPT2Tokenizer.from_pretrained('gpt2').encode('Hello world')\n"
                        "print('numpy' in sys.modules, 'numba' in sys.modules)")
    assert loaded == ["False", "False"]


def test_the_numpy_backend_never_loads_numba():
    loaded = run_python("import sys\nfrom minigpt2 import GPT2LMHeadModel\n"
                        "m = GPT2LMHeadModel.from_pretrained('tests/fixtures/models/odd', backend='numpy')\n"
                        "m.generate([[1, 2, 3]], max_new_tokens=2)\n"
                        "print('numba' in sys.modules)")
    assert loaded == ["False"]


def planted(monkeypatch, relative_path, line):
    """Make the checker read one package file with `line` appended (the file itself is untouched)."""
    source = PACKAGE / relative_path
    text = source.read_text() + f"\n{line}\n"
    original = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: text if self == source else original(self, *a, **k))


def test_the_checker_catches_an_upward_import(monkeypatch):
    planted(monkeypatch, "ops.py", "from minigpt2 import model")
    _, problems = import_graph()
    assert any("minigpt2.ops (layer 2) imports minigpt2.model (layer 5)" in p for p in problems), problems


def test_the_checker_catches_a_circle_inside_a_folder(monkeypatch):
    planted(monkeypatch, "engine/jit.py", "from minigpt2.engine import policy")   # policy -> amx -> jit -> policy
    graph, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is not None and "minigpt2.engine.jit" in cycle and "minigpt2.engine.policy" in cycle


def test_the_checker_catches_a_private_name(monkeypatch):
    planted(monkeypatch, "quantize.py", "from minigpt2.weights.hub import _normalize_etag")
    _, problems = import_graph()
    assert any("private name _normalize_etag" in p for p in problems), problems
