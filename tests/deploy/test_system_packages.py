"""scripts/ensure-system-packages.sh: silent when all is there, clear when it cannot install."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-system-packages.sh"


def test_nothing_to_do_when_the_programs_are_installed() -> None:
    result = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_without_root_it_names_what_to_install_and_fails(tmp_path: Path) -> None:
    setpriv = shutil.which("setpriv")
    if os.getuid() != 0 or setpriv is None:
        pytest.fail("this test drops root with setpriv (util-linux): run it as root")
    script = SCRIPT.read_text().replace("/usr/sbin/rsyslogd", str(tmp_path / "nope"))
    result = subprocess.run(  # as nobody, the script on stdin
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-s"],
        input=script, capture_output=True, text=True, timeout=60, cwd="/",
    )
    assert result.returncode == 1
    assert "missing: rsyslog" in result.stderr
    assert "apt-get install -y --no-install-recommends rsyslog" in result.stderr
