"""Layering: the library never imports the converters (``bfm``), the data layer does not
import preprocessing, and no module of ``recon_tf`` or ``bfm`` is part of an import cycle
(imports inside functions count too)."""

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("recon_tf", "bfm")


def _run(code: str) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_library_modules_never_import_bfm():
    names = sorted(m for m in _modules() if m.split(".")[0] == "recon_tf")
    assert len(names) > 20
    code = (f"import importlib, sys\nfor name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'bfm'))\n")
    assert _run(code) == "[]"


def test_data_readers_do_not_import_preprocessing():
    code = ("import sys, recon_tf.data.readers\n"
            "print(sorted(m for m in sys.modules if m.startswith('recon_tf.preprocess')))")
    assert _run(code) == "[]"


def _modules() -> dict[str, str]:
    """Module name → file for every module of the checked packages."""
    out = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO, package)):
            for name in files:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, name), REPO)[:-3]
                    module = rel.replace(os.sep, ".")
                    out[module[:-len(".__init__")] if module.endswith(".__init__")
                        else module] = os.path.join(REPO, rel + ".py")
    return out


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports(module: str, path: str, known: dict[str, str]) -> set[str]:
    """Modules of ``known`` that ``module`` imports anywhere in its file (with the
    packages they live in, except packages that hold ``module`` itself)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[:len(module.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else base)
    edges = set()
    own = set(_ancestors(module)) | {module}
    for target in targets:
        for name in [target] + _ancestors(target):
            if name in known and name not in own:
                edges.add(name)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_and_bfm_depends_on_the_library_only():
    known = _modules()
    graph = {m: _imports(m, p, known) for m, p in known.items()}
    assert _cycles(graph) == []
    library_to_bfm = sorted((m, t) for m, ts in graph.items() if m.startswith("recon_tf")
                            for t in ts if t.split(".")[0] == "bfm")
    assert library_to_bfm == []
    assert "recon_tf.face_model" in graph["bfm.ict"]  # converters do use the library


def test_the_cycle_finder_finds_cycles(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    source = tmp_path / "m.py"
    source.write_text("import q\nfrom p import x\n\ndef f():\n    from p.y import thing\n")
    known = {"p": "", "p.x": "", "p.y": "", "p.z": "", "q": ""}
    assert _imports("p.z", str(source), known) == {"q", "p.x", "p.y"}  # p itself holds p.z
    assert _imports("r", str(source), known) == {"q", "p", "p.x", "p.y"}
