"""The command line: clear errors for a taken port and a bad configuration."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transports", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_a_taken_port_is_a_one_line_error_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1
    assert f"relaycore: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_config_key_is_named_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("[limits]\nmax_mesage_bytes = 10\n")
    result = run_cli("serve", "--port", "0", "--config", str(config))
    assert result.returncode == 2
    assert "max_mesage_bytes" in result.stderr


def test_an_unknown_environment_setting_is_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "transports", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"RELAYCORE_LIMITS_PING_INTERVL": "5", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "RELAYCORE_LIMITS_PING_INTERVL" in result.stderr


def test_the_trio_backend_without_trio_is_one_line_naming_the_extra_and_exit_2() -> None:
    # trio is an optional dependency: hide it, as a plain `pip install .` leaves it out.
    code = (
        "import sys; sys.modules['trio'] = None; from transports.cli import main; "
        "sys.exit(main(['serve', '--port', '0', '--backend', 'trio']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "relaycore: the trio backend needs trio: pip install 'relaycore[trio]'"
    ]
