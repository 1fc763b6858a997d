"""The runtime must not load the heavy stack, and installed names must be distinctive."""
import json
import subprocess
import sys

HEAVY = ["torch", "transformers", "optimum", "onnx"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return set(json.loads(out))


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


def test_cli_help_lists_export_commands_without_importing_them():
    mods = _modules_after("from click.testing import CliRunner\nfrom genre_edge.cli import main\n"
                          "r = CliRunner().invoke(main, ['--help']); assert 'train' in r.output and 'distill' in r.output")
    assert not [m for m in HEAVY if m in mods]


def test_runtime_sources_do_not_import_heavy_packages():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "runtime"
    pat = re.compile(r"^\s*(import|from)\s+(torch|transformers|optimum|onnx)(\.|\s|$)", re.M)
    bad = [str(p) for p in root.rglob("*.py") if pat.search(p.read_text())]
    assert bad == []
