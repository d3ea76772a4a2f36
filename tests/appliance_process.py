"""A real `minipbx run` process driven through its CLI and control socket (tests only)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 60.0


class Core:
    """A running `minipbx run` process and the CLI pointed at it."""

    def __init__(self, data_dir: Path, config: Path | None = None) -> None:
        self.data_dir = data_dir
        self.socket = data_dir / "control.sock"
        self.env = os.environ | {"MINIPBX_DATA_DIR": str(data_dir)}
        self.log = data_dir / "core.log"
        argv = [sys.executable, "-m", "firmware", "run", "--data-dir", str(data_dir)]
        if config is not None:
            argv += ["--config", str(config)]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "firmware", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
        if check:
            assert result.returncode == 0, (
                f"minipbx {' '.join(args)}: exit {result.returncode}\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        return raw_exchange(self.socket, json.dumps(payload).encode() + b"\n")

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json").stdout)

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the core exited ({self.process.returncode}):\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.log_text()}")
            time.sleep(0.05)

    def wait_ready(self) -> None:
        def answering() -> bool:
            if not self.socket.exists():
                return False
            try:
                status = self.request({"cmd": "status"})["status"]
            except OSError:
                return False
            return status["line_card"]["link"] == "up" and all(
                p["state"] == "idle" for p in status["ports"]
            )

        self.wait_until(answering, START_TIMEOUT_S, "the core to answer with the card up")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def raw_exchange(path: Path, data: bytes, timeout: float = 10.0) -> dict[str, Any]:
    """Send raw bytes on a fresh connection and read one reply line."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(data)
        return json.loads(read_line(sock))


def read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


