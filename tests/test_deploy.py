"""The systemd unit in deploy/ is valid (systemd-analyze verify) and names only options genre serve has."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "genre-edge.service"


def test_unit_uses_only_real_serve_options():
    text = UNIT.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert " serve " in exec_start
    from genre_edge.cli import main

    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    opts = re.findall(r"(--[a-z][a-z-]+)", exec_start)
    assert opts and all(o in help_text for o in opts), (opts, help_text)
    for var in re.findall(r"Environment=(GENRE_[A-Z_]+)=", text):
        assert var in ("GENRE_BUNDLE", "GENRE_PROFILE", "GENRE_STATE_DIR", "GENRE_CACHE_DIR")  # read by the runtime
    assert "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text and "StateDirectory=" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
@pytest.mark.skipif(not Path(sys.executable).with_name("genre").is_file(),
                    reason="no genre command next to this Python (the package is not installed here)")
def test_unit_verifies(tmp_path):
    genre = Path(sys.executable).with_name("genre")
    unit = tmp_path / "genre-edge.service"
    unit.write_text(UNIT.read_text().replace("/opt/genre-edge/venv/bin/genre", str(genre)))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (p.stdout + p.stderr).splitlines() if "genre-edge.service" in line]
    assert p.returncode == 0 and not problems, p.stdout + p.stderr
    # the check is live: a broken unit is reported
    bad = tmp_path / "bad.service"
    bad.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivileges=perhaps"))
    p = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "perhaps" in p.stdout + p.stderr
