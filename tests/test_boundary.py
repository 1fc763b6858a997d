"""The folder boundary is the dependency boundary.

- the runtime (``genre_edge``, ``runtime/``) loads none of the heavy stack and never imports the
  training side (``genre_edge_export``);
- the training side's evaluation modules (data loaders, splits, metrics, evaluation, MIND scoring,
  baselines, the CLI) are torch-free: ``genre eval baselines`` runs without the export extra;
- no import cycles between project modules, counting imports inside functions too.
"""
import ast
import json
import pathlib
import subprocess
import sys

import pytest

from conftest import needs_export_package

HEAVY = ["torch", "transformers", "optimum", "onnx"]
ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = {"genre_edge": ROOT / "runtime", "genre_edge_export": ROOT / "export"}
# torch-free modules of the training side (evaluation protocol, data, reports, the CLI layer)
TORCH_FREE = ["genre_edge_export.data", "genre_edge_export.data.domain", "genre_edge_export.split",
              "genre_edge_export.metrics", "genre_edge_export.evaluate", "genre_edge_export.mind_score",
              "genre_edge_export.baselines", "genre_edge_export.reports", "genre_edge_export.cli"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return set(json.loads(out))


def _module_name(pkg: str, root: pathlib.Path, path: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([pkg, *parts])


def import_graph() -> dict[str, set[str]]:
    """Project module -> project modules it imports (module level and inside functions alike)."""
    files = {}
    for pkg, root in PACKAGES.items():
        for p in root.rglob("*.py"):
            files[_module_name(pkg, root, p)] = p
    graph = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        here = mod if is_pkg else mod.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                # "from pkg import sub" imports the submodule when there is one
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for n in names:
                while n and n not in files:
                    n = n.rpartition(".")[0]
                if n and n != mod:
                    deps.add(n)
        graph[mod] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_runtime_import_and_use_loads_no_heavy_stack(tiny_bundle):
    code = (
        "import genre_edge, genre_edge.cli, genre_edge.server\n"
        "from genre_edge.recommender import Recommender\n"
        f"r = Recommender.load(r'{tiny_bundle / 'bundle'}', 'x86-avx512-vnni', state_dir=r'{tiny_bundle / 'st-b'}')\n"
        "r.recommend(['m1', 'm2'], query='funny', k=3, explain=True)\n"
        "r.embed(['hello'])\n"
    )
    mods = _modules_after(code)
    loaded = [m for m in HEAVY if m in mods]
    assert loaded == [], f"runtime loaded {loaded}"
    assert "onnxruntime" in mods  # the check itself is live
    assert not [m for m in mods if m.startswith("genre_edge_export")], "serving imported the training side"
    assert "genre_edge.bench" not in mods and "matplotlib" not in mods  # the serving path never imports the bench


def test_cli_help_lists_export_commands_without_importing_them():
    mods = _modules_after("from click.testing import CliRunner\nfrom genre_edge.cli import main\n"
                          "r = CliRunner().invoke(main, ['--help']); assert 'train' in r.output and 'distill' in r.output")
    assert not [m for m in HEAVY if m in mods]


def test_runtime_sources_do_not_import_heavy_packages():
    import re

    pat = re.compile(r"^\s*(import|from)\s+(torch|transformers|optimum|onnx)(\.|\s|$)", re.M)
    bad = [str(p) for p in PACKAGES["genre_edge"].rglob("*.py") if pat.search(p.read_text())]
    assert bad == []


def test_runtime_never_imports_the_training_side():
    graph = import_graph()
    bad = sorted((m, d) for m, deps in graph.items() if m.startswith("genre_edge.") or m == "genre_edge"
                 for d in deps if d.startswith("genre_edge_export"))
    assert bad == []
    # and the check itself sees imports (relative, inside functions)
    assert "genre_edge.recommender" in graph["genre_edge.bench.harness"]
    assert "genre_edge_export.prepare" in graph["genre_edge_export.trainer"]


def test_no_import_cycles_between_project_modules():
    assert _cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_evaluation_side_never_reaches_the_heavy_modules():
    """No import path, even through functions, leads from the torch-free modules to torch users."""
    graph = import_graph()
    heavy_users = {"genre_edge_export.models", "genre_edge_export.trainer", "genre_edge_export.onnx_export",
                   "genre_edge_export.distill", "genre_edge_export.bundle_writer"}
    for start in ["genre_edge_export.data", "genre_edge_export.split", "genre_edge_export.metrics",
                  "genre_edge_export.evaluate", "genre_edge_export.mind_score"]:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph.get(m, ())
        assert not seen & heavy_users, f"{start} reaches {sorted(seen & heavy_users)}"


@needs_export_package
@pytest.mark.parametrize("module", TORCH_FREE)
def test_evaluation_modules_load_no_heavy_stack(module):
    mods = _modules_after(f"import {module}")
    assert [m for m in HEAVY if m in mods] == []
    assert module in mods
