"""The import structure of jaxtok (DESIGN.md §1): every module imports, downward, no loops.

1. Each module of jaxtok imports on its own in a fresh interpreter (a subprocess each), so no
   module depends on another having been imported first and none fails at import time.
2. No module imports one of a higher layer. From the top: `configs/` -> `trainers/`, `codec`,
   `tokenize` -> `api`, `eval/` (and the package root `jaxtok`, which re-exports `api`) ->
   `tokenizers/`, `nets/`, `data` -> `io/` (which imports nothing of jaxtok outside `io/`).
   Imports inside functions count as much as those at the top: a lazy import still runs up.
3. No import cycle between jaxtok modules, top-level and function-level imports both counted.

Imports are read with `ast` from the source; `from pkg import name` counts as an import of the
submodule `pkg.name` when that is a module, else of `pkg` itself.
"""
from __future__ import annotations

import ast
import concurrent.futures
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxtok"

# (rank, module prefixes), highest first: a module may import modules of its own rank or below.
LAYERS = (
    (5, ("jaxtok.configs",)),
    (4, ("jaxtok.trainers", "jaxtok.codec", "jaxtok.tokenize")),
    (3, ("jaxtok.api", "jaxtok.eval", "jaxtok")),  # "jaxtok": the root package only.
    (2, ("jaxtok.tokenizers", "jaxtok.nets", "jaxtok.data")),
    (1, ("jaxtok.io",)),
)
LAYER_NAMES = {5: "configs", 4: "trainers/codec/tokenize", 3: "api/eval", 2: "tokenizers/nets/data",
               1: "io"}


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
  """`{dotted name: file}` of every module of jaxtok (packages by their `__init__.py`)."""
  return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
          if "__pycache__" not in p.parts}


def _rank(module: str) -> int | None:
  for rank, prefixes in LAYERS:
    for prefix in prefixes:
      if module == prefix or (prefix != "jaxtok" and module.startswith(prefix + ".")):
        return rank
  return None


def _imports(name: str, path: pathlib.Path, modules) -> list[tuple[str, int, bool]]:
  """`(imported jaxtok module, line, inside a function)` for every import in the file."""
  tree = ast.parse(path.read_text(), filename=str(path))
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                 ast.Lambda))
      if isinstance(child, ast.Import):
        for alias in child.names:
          if alias.name == "jaxtok" or alias.name.startswith("jaxtok."):
            found.append((alias.name, child.lineno, in_function))
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ""
        if child.level:  # Relative: resolve against this module's package.
          anchor = package.split(".")
          anchor = anchor[:len(anchor) - (child.level - 1)]
          base = ".".join(anchor + ([base] if base else []))
        if base == "jaxtok" or base.startswith("jaxtok."):
          for alias in child.names:
            sub = f"{base}.{alias.name}"
            found.append((sub if sub in modules else base, child.lineno, in_function))
      visit(child, nested)

  visit(tree, False)
  return found


def _graph():
  modules = _modules()
  return modules, {name: _imports(name, path, modules) for name, path in modules.items()}


def _import_alone(module: str) -> tuple[str, int, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(
      [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  proc = subprocess.run([sys.executable, "-c", f"import importlib; importlib.import_module("
                         f"{module!r})"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
  return module, proc.returncode, proc.stderr.strip()


def test_every_module_imports_in_a_fresh_interpreter():
  modules = sorted(_modules())
  assert len(modules) > 20, modules  # The walk found the package.
  workers = max(1, min(4, os.cpu_count() or 1))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    results = list(pool.map(_import_alone, modules))
  failed = [f"{m} (exit {rc}):\n  " + "\n  ".join(err.splitlines()[-3:])
            for m, rc, err in results if rc != 0]
  assert not failed, "modules that fail to import on their own:\n" + "\n".join(failed)


def test_every_module_belongs_to_a_layer():
  unplaced = sorted(m for m in _modules() if _rank(m) is None)
  assert not unplaced, (f"modules outside the layers of DESIGN.md §1 (move them, or place "
                        f"them in LAYERS): {unplaced}")


def test_no_module_imports_a_higher_layer():
  modules, graph = _graph()
  bad = []
  for name, imports in sorted(graph.items()):
    rank = _rank(name)
    if rank is None:
      continue  # Reported by test_every_module_belongs_to_a_layer.
    for target, line, lazy in imports:
      target_rank = _rank(target)
      if target_rank is not None and target_rank > rank:
        bad.append(f"{modules[name].relative_to(ROOT)}:{line}: {name} "
                   f"({LAYER_NAMES[rank]}) imports {target} ({LAYER_NAMES[target_rank]})"
                   f"{' inside a function' if lazy else ''}")
  assert not bad, "imports that run up the layers:\n" + "\n".join(bad)


def test_io_imports_nothing_of_jaxtok_outside_io():
  modules, graph = _graph()
  bad = [f"{modules[name].relative_to(ROOT)}:{line}: {name} imports {target}"
         for name, imports in sorted(graph.items()) if _rank(name) == 1
         for target, line, _ in imports if _rank(target) != 1]
  assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan, iterative)."""
  index, low, on_stack, stack, out = {}, {}, set(), [], []
  counter = 0
  for root in sorted(graph):
    if root in index:
      continue
    work = [(root, iter(sorted(graph[root])))]
    index[root] = low[root] = counter
    counter += 1
    stack.append(root)
    on_stack.add(root)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = counter
          counter += 1
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph.get(child, ())))))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        if len(component) > 1:
          out.append(sorted(component))
  return out


def test_cycle_finder_finds_a_loop():
  # The checker itself: a planted loop is found, a chain is not.
  assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
  assert _cycles({"a": ["b"], "b": ["c"], "c": []}) == []


def test_import_reader_sees_lazy_relative_and_from_imports(tmp_path):
  # The checker itself: what the layer test reads from a file.
  path = tmp_path / "fake.py"
  path.write_text("from jaxtok.io import safetensors\n"
                  "from . import layers\n"
                  "def f():\n"
                  "  import jaxtok.trainers.train\n"
                  "  from jaxtok import load\n")
  modules = {"jaxtok", "jaxtok.io", "jaxtok.io.safetensors", "jaxtok.tokenizers.layers",
             "jaxtok.trainers.train"}
  got = _imports("jaxtok.tokenizers.fake", path, modules)
  assert got == [("jaxtok.io.safetensors", 1, False), ("jaxtok.tokenizers.layers", 2, False),
                 ("jaxtok.trainers.train", 4, True), ("jaxtok", 5, True)]
  assert [_rank(m) for m, _, _ in got] == [1, 2, 4, 3]
  assert _rank("jaxtok.testing") is None and _rank("jaxtok.eval.fid") == 3


def test_no_import_cycles():
  modules, graph = _graph()
  edges = {name: sorted({t for t, _, _ in imports if t in modules and t != name})
           for name, imports in graph.items()}
  loops = _cycles(edges)
  detail = []
  for loop in loops:
    members = set(loop)
    detail.append(" <-> ".join(loop) + "\n    " + "\n    ".join(
        f"{modules[m].relative_to(ROOT)}:{line}: imports {t}{' (in a function)' if lazy else ''}"
        for m in loop for t, line, lazy in graph[m] if t in members and t != m))
  assert not loops, "import cycles between jaxtok modules:\n" + "\n".join(detail)
