"""The shape of the package, read statically from its source: no import cycle (lazy imports
included), methods below the loop, and a library that needs nothing outside itself."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lt_jax"
RUNNER = {"lt_jax.train", "lt_jax.loop", "lt_jax.two_phase", "lt_jax.run", "lt_jax.main",
          "lt_jax.config", "lt_jax.report", "lt_jax.checkpointing", "lt_jax.bench"}


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, pathlib.Path]:
  return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(path: pathlib.Path, known) -> set[str]:
  """The modules ``path`` imports anywhere (top level or inside functions), as dotted names."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        names.add(full if full in known else node.module)
  return names


def import_graph() -> dict[str, set[str]]:
  known = modules()
  return {name: imported(path, known) & set(known) - {name} for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """A cycle of ``graph`` as a list of nodes (first = last), or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_find_cycle_finds_one():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_package():
  graph = import_graph()
  assert {"lt_jax.train", "lt_jax.methods", "lt_jax.data"} <= set(graph)
  assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_methods_sit_below_the_runner():
  graph = import_graph()
  for name, deps in graph.items():
    if name.startswith("lt_jax.methods"):
      assert not deps & RUNNER, (name, sorted(deps & RUNNER))


def test_the_library_needs_nothing_outside_itself():
  for name, path in modules().items():
    text = path.read_text()
    deps = imported(path, modules())
    outside = {d for d in deps if d.split(".")[0] in ("configs", "launch", "experiments", "tests")}
    assert not outside, (name, sorted(outside))
    assert "../shared" not in text and "/work/" not in text, name
