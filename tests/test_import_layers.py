"""Imports point down the house and never in a loop (docs/design.md §1).

From the top: `configs/` (imported by nothing) -> `codec/` (.jtok, priors, rate-distortion)
-> `tokenize/` -> `trainers/` -> `eval/` -> `api` (and the root package) -> `adaptive`, `hub` ->
`tokenizers/`, `nets/`, `data/`, `parallel/` -> `io/`, `metrics` (use nothing of jaxtok).
A module may import modules of a lower layer and of its own package; the
imports are read with `ast`, at any depth of the file (a lazy import counts as much as a top one).
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxtok"

# Layer of each first-level part of jaxtok (higher imports lower).
LAYERS = {
    "configs": 9,
    "codec": 8,  # .jtok files, priors (may read token shards), rate-distortion
    "tokenize": 7,
    "trainers": 6,
    "eval": 5,
    "api": 4, "": 4,  # "" = the root package `jaxtok/__init__.py` (it re-exports api).
    "adaptive": 3,  # the adaptive-length search the api uses
    "hub": 3,  # hf: names: download, recognise, convert, cache (jaxtok.load("hf:..."))
    "tokenizers": 2, "nets": 2, "data": 2, "parallel": 2,
    "io": 1, "metrics": 1,  # use nothing of jaxtok
    "platform": 1,  # the platform compiled for (a TPU topology on a CPU host), jax only
}


def _modules() -> dict[str, Path]:
  """`{dotted module name: file}` of every module of jaxtok."""
  out = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


MODULES = _modules()


def _part(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def _imports(module: str, path: Path) -> set[str]:
  """Every jaxtok module `module` imports (resolved to the longest known module name)."""
  tree = ast.parse(path.read_text(), str(path))
  is_pkg = path.name == "__init__.py"
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = module.split(".") if is_pkg else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
      for alias in node.names:
        # `from pkg import sub` needs the submodule; `from pkg import name` needs pkg itself.
        sub = f"{base}.{alias.name}"
        names.add(sub if sub in MODULES else base)
  out = set()
  for name in names:
    if not (name == "jaxtok" or name.startswith("jaxtok.")):
      continue
    parts = name.split(".")
    while parts and ".".join(parts) not in MODULES:
      parts.pop()
    if parts:
      out.add(".".join(parts))
  out.discard(module)
  return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_every_part_has_a_layer():
  unknown = sorted({_part(m) for m in MODULES} - set(LAYERS))
  assert not unknown, f"parts of jaxtok with no layer in LAYERS: {unknown}"


def test_imports_point_down():
  bad = []
  for module, deps in GRAPH.items():
    own = _part(module)
    for dep in deps:
      other = _part(dep)
      if other == own and own:
        continue  # Inside one package (cycles are checked below).
      if LAYERS[other] >= LAYERS[own] and not (own == "" and dep == "jaxtok.api"):
        bad.append(f"{module} (layer {own or 'root'}) imports {dep} (layer {other or 'root'})")
  assert not bad, "imports that do not point down the layers:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
  state: dict[str, int] = {}
  stack: list[str] = []
  cycles = []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for d in sorted(GRAPH[m]):
      if state.get(d) == 1:
        cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
      elif d not in state:
        visit(d)
    stack.pop()
    state[m] = 2

  for m in sorted(GRAPH):
    if m not in state:
      visit(m)
  assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_layer_check_catches_an_upward_import(tmp_path):
  # The checker itself must be able to fail: an io module importing the trainer is flagged.
  fake = tmp_path / "fake.py"
  fake.write_text("from jaxtok.trainers import train\nimport numpy\n")
  assert _imports("jaxtok.io.fake", fake) == {"jaxtok.trainers.train"}
  assert LAYERS[_part("jaxtok.trainers.train")] > LAYERS[_part("jaxtok.io.fake")]


@pytest.mark.slow  # ~55 interpreter starts with jax: about 100 s of CPU.
@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_in_a_fresh_interpreter(module):
  proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  assert proc.returncode == 0, f"import {module} failed:\n{proc.stderr[-3000:]}"


_OPTIONAL = ("torch", "diffusers", "transformers", "tensorflow")


def test_optional_extras_are_never_imported_at_module_level():
  """A module-level `import torch` in the package or a test stops the whole run at
  collection without the torch extra (issue 24 item 10): optional extras are imported
  inside the function that needs them (tests: `pytest.importorskip`)."""
  bad = []
  for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]):
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:  # Module level only (try/except ImportError blocks aside).
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      bad += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
              if n.split(".")[0] in _OPTIONAL]
  assert not bad, bad
