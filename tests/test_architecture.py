"""The layer order of the package: no module imports from a layer above its own.

The table below is the one statement of the order (``docs/architecture.rst``
draws it).  Every import is read from the source with `ast`: module-level and
function-level ``import`` / ``from ... import`` statements, relative or
absolute, and the ``'aiflat_astro.module:attribute'`` strings of the lazy
registries (an import that only happens later is still a dependency).  A
module may import from its own layer or any layer below it.
"""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aiflat_astro"

#: Layers, lowest first: (name, module prefixes).  A prefix names a module or
#: a package with everything in it; the longest matching prefix wins.
LAYERS = (
    ("utilities", ("utils", "_constants", "_version")),
    ("array cores", ("_imaging",)),
    ("data model", ("dq", "provenance", "products")),
    ("io", ("io", "_registry_hook")),
    ("data sets", ("datasets",)),
    ("frames", ("combine", "registration")),
    ("gemini client", ("_gemini",)),
    ("detection", ("detection",)),
    ("flat", ("flat",)),
    ("apply", ("apply",)),
    ("evaluation", ("evaluate",)),
    ("pipeline", ("_runstate", "pipeline", "night", "_nightflat", "report")),
    ("command line", ("cli", "_commands")),
)

#: The order *inside* a package, lowest first: (name, module prefixes relative to the
#: package).  An import between two modules of the package may not go to a higher
#: sub-layer; the package's ``__init__`` sits on top of them all.
INNER_LAYERS = {
    "flat": (
        ("options and records", ("_options", "_header", "_uncertainty", "silhouette", "_windows")),
        ("local estimate", ("estimators.jitter", "estimators.local")),
        ("radial profile", ("_radial",)),
        ("transmission", ("_transmission",)),
        ("estimators", ("estimators", "estimators.measured", "estimators.gemini", "estimators._interface",
                        "estimators.registry")),
        ("full flat", ("fullflat",)),
        ("front end", ("_high_level",)),
    ),
    "detection": (
        ("protocol and outputs", ("_protocol", "outputs")),
        ("detectors", ("local", "gemini")),
        ("consensus", ("consensus",)),
        ("registry and review", ("_base", "review")),
        ("front end", ("_high_level",)),
    ),
}

#: Known cycles between modules (through imports inside functions), each in
#: files whose owners break them; a new cycle fails `test_no_new_import_cycle`.
KNOWN_CYCLES = ()

_REGISTRY_STRING = re.compile(r"^aiflat_astro(\.\w+)+:\w+$")


def _module_name(path):
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["aiflat_astro"] + parts)


def _is_module(name):
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _resolve(node, module, is_package):
    """The modules an import node names (absolute dotted names inside the package)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module.split(".")
        base = base[:len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target == "aiflat_astro" and all(a.name == "__version__" for a in node.names):
        return ["aiflat_astro._version"]
    names = [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
    return names or [target]


def _imports(path):
    """``{imported module: first line}`` of one source file."""
    module = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            targets = _resolve(node, module, path.name == "__init__.py")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _REGISTRY_STRING.match(node.value):
            targets = [node.value.partition(":")[0]]
        else:
            continue
        for target in targets:
            if target.startswith("aiflat_astro.") and target != module:
                found.setdefault(target, node.lineno)
    return module, found


def _layer(module):
    """Index of the layer of ``module`` (None: the package facade ``aiflat_astro`` itself)."""
    if module == "aiflat_astro":
        return None
    rel = module[len("aiflat_astro."):]
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (rel == prefix or rel.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_architecture.py")
    return best[0]


def _graph():
    return dict(_imports(path) for path in sorted(PACKAGE.rglob("*.py")))


def test_every_module_has_a_layer():
    for module in _graph():
        _layer(module)


def test_no_upward_import():
    upward = []
    for module, imports in _graph().items():
        own = _layer(module)
        if own is None:
            continue
        for target, line in sorted(imports.items()):
            other = _layer(target)
            if other is None or other > own:
                upward.append(f"{module}:{line} imports {target} "
                              f"({LAYERS[own][0]} -> {'the package facade' if other is None else LAYERS[other][0]})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def _inner_layer(module, package):
    """Index of ``module``'s sub-layer in ``package`` (the package itself: on top)."""
    layers = INNER_LAYERS[package]
    full = "aiflat_astro." + package
    if module == full:
        return len(layers)
    rel = module[len(full) + 1:]
    best = None
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (rel == prefix or rel.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    if best is None:
        raise AssertionError(f"{module} is in no sub-layer of {package}: add it to INNER_LAYERS")
    return best[0]


def _inner_upward(graph):
    """Imports between two modules of one package that go to a higher sub-layer."""
    upward = []
    for package, layers in INNER_LAYERS.items():
        full = "aiflat_astro." + package
        inside = [m for m in graph if m == full or m.startswith(full + ".")]
        for module in inside:
            own = _inner_layer(module, package)
            for target, line in sorted(graph[module].items()):
                if target != full and not target.startswith(full + "."):
                    continue
                other = _inner_layer(target, package)
                if other > own:
                    names = [name for name, _ in layers] + ["the package"]
                    upward.append(f"{module}:{line} imports {target} ({names[own]} -> {names[other]})")
    return upward


def test_every_module_has_a_sub_layer():
    for module in _graph():
        for package in INNER_LAYERS:
            if module.startswith(f"aiflat_astro.{package}.") or module == f"aiflat_astro.{package}":
                _inner_layer(module, package)


def test_no_upward_import_inside_a_package():
    upward = _inner_upward(_graph())
    assert not upward, "imports from a higher sub-layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("module, target", [
    ("aiflat_astro.flat._options", "aiflat_astro.flat._high_level"),
    ("aiflat_astro.flat.estimators.local", "aiflat_astro.flat.estimators.registry"),
    ("aiflat_astro.flat.fullflat", "aiflat_astro.flat"),
    ("aiflat_astro.detection.local.detector", "aiflat_astro.detection._base"),
    ("aiflat_astro.detection._protocol", "aiflat_astro.detection.review"),
])
def test_inner_upward_imports_are_caught(module, target):
    """An upward import inside flat/ or detection/, added to the real graph, fails the check."""
    graph = _graph()
    graph[module] = dict(graph[module], **{target: 1})
    found = _inner_upward(graph)
    assert len(found) == 1 and found[0].startswith(f"{module}:1 imports {target} (")


def _short(module):
    return module[len("aiflat_astro."):]


def _cycles(graph):
    """Strongly connected components (more than one module) of the import graph, parents excluded.

    A module importing a package that contains it (``from .. import x``) is
    not an edge: the package is already being imported when it runs.
    """
    edges = {m: {t for t in imports if t in graph and not m.startswith(t + ".")} for m, imports in graph.items()}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_new_import_cycle():
    graph = {m: imports for m, imports in _graph().items() if m != "aiflat_astro"}
    known = [set(c) for c in KNOWN_CYCLES]
    new = []
    for component in _cycles(graph):
        short = {_short(m) for m in component}
        if not any(short <= cycle for cycle in known):
            new.append(", ".join(sorted(short)))
    assert not new, "import cycles:\n" + "\n".join(new)


@pytest.mark.parametrize("source, expected", [
    ("from ..flat import make_flat\n", "aiflat_astro.flat"),
    ("def f():\n    from aiflat_astro.pipeline import run_pipeline\n", "aiflat_astro.pipeline"),
    ("REGISTRY = {'x': 'aiflat_astro.apply:apply_flat'}\n", "aiflat_astro.apply"),
])
def test_upward_imports_are_seen(tmp_path, source, expected):
    """The parser sees relative, function-level and registry-string imports (a check that can fail)."""
    fake = tmp_path / "aiflat_astro" / "io"
    fake.mkdir(parents=True)
    (tmp_path / "aiflat_astro" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "probe.py").write_text(source)
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "aiflat_astro"
    try:
        module, imports = _imports(fake / "probe.py")
    finally:
        PACKAGE = saved
    assert module == "aiflat_astro.io.probe"
    assert expected in imports
    assert _layer(expected) > _layer(module)
