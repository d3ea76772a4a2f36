"""The real appliance process, driven the way an installer does: `minipbx ...` commands.

Each test starts `python -m firmware run` in its own data folder (database, control
socket), waits for the socket and the line card, talks to it through the CLI or raw on the
socket, and stops it in a `finally`. Every subprocess call is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.appliance_process import (  # noqa: F401
    CLI_TIMEOUT_S,
    REPO_ROOT,
    START_TIMEOUT_S,
    Core,
    raw_exchange,
    read_line,
)
from tests.conftest import office_config


@pytest.fixture
def core(data_dir: Path) -> Iterator[Core]:
    running = Core(data_dir)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def calls_json(core: Core, last: int = 5) -> list[dict[str, Any]]:
    return json.loads(core.cli("calls", "--last", str(last), "--json").stdout)


# ----- the installer's commands ----------------------------------------------------------


def test_selftest_call_passes_and_shows_up_in_the_call_list(core: Core) -> None:
    result = core.cli("selftest", "call", "202", "203")
    assert result.stdout.strip().endswith("PASS"), result.stdout
    for figure in (
        "offhook_to_dial_tone_ms",
        "last_digit_to_ringing_ms",
        "answer_to_connected_ms",
        "speech_202->203_ms",
        "speech_203->202_ms",
        "cdr_disposition: answered",
    ):
        assert figure in result.stdout, result.stdout
    assert "problem" not in result.stdout

    listing = core.cli("calls", "--last", "5").stdout
    rows = [line for line in listing.splitlines()[1:] if line.strip()]
    assert len(rows) == 1, listing
    assert "202" in rows[0] and "203" in rows[0] and "answered" in rows[0], listing
    (call,) = calls_json(core)
    assert (call["caller_number"], call["dialled"], call["answered_extension"]) == (
        "202",
        "203",
        "203",
    )
    assert call["disposition"] == "answered"


def test_status_json_shows_ten_ports_with_the_link_up(core: Core) -> None:
    status = core.status()
    assert status["line_card"]["link"] == "up"
    assert status["config"] == "<embedded default>"
    ports = status["ports"]
    assert [p["port"] for p in ports] == list(range(1, 11))
    assert [p["kind"] for p in ports] == ["fxs"] * 8 + ["fxo"] * 2
    assert [p["number"] for p in ports] == [str(n) for n in range(201, 209)] + ["city1", "city2"]
    assert all(p["state"] == "idle" for p in ports)
    assert status["calls"] == [] and status["lines_in_use"] == 0
    assert status["mixer"]["slots_in_use"] == 0


def test_lifted_phone_shows_as_dialling_in_status(core: Core) -> None:
    core.cli("sim", "offhook", "204")
    core.wait_until(lambda: core.status()["ports"][3]["state"] == "dialling", 5, "204 dialling")
    text = core.cli("status").stdout
    (row,) = [line for line in text.splitlines() if " 204 " in line]
    assert "dialling" in row, text
    assert "calls in progress: 1" in text
    core.cli("sim", "onhook", "204")
    core.wait_until(lambda: core.status()["ports"][3]["state"] == "idle", 5, "204 idle")


def test_sim_unplug_and_plug_show_in_status(core: Core) -> None:
    core.cli("sim", "unplug")
    core.wait_until(
        lambda: all(p["state"] == "out_of_service" for p in core.status()["ports"]),
        10,
        "every port out of service",
    )
    assert core.status()["line_card"]["link"] != "up"
    assert "out_of_service" in core.cli("status").stdout
    core.cli("sim", "plug")
    core.wait_ready()
    assert core.status()["line_card"]["counters"]["link_losses"] == 1
    assert core.cli("selftest", "call", "205", "206").stdout.strip().endswith("PASS")


def test_reload_without_a_config_file_says_there_is_none(core: Core) -> None:
    result = core.cli("reload", check=False)
    assert result.returncode != 0
    assert "no file to reload" in result.stderr


def test_sigterm_stops_the_core_cleanly(core: Core) -> None:
    core.process.send_signal(signal.SIGTERM)
    assert core.process.wait(10) == 0, core.log_text()
    assert not core.socket.exists(), "the control socket is removed on a clean stop"
    assert "event=appliance_stopped" in core.log_text()
    result = core.cli("status", check=False)
    assert result.returncode != 0
    assert "no running appliance" in result.stderr


def test_sighup_reloads_the_config_file(data_dir: Path) -> None:
    config = data_dir / "office.toml"
    config.write_text(office_config())
    running = Core(data_dir, config)
    try:
        running.wait_ready()
        assert running.status()["config"] == str(config)
        config.write_text(office_config().replace('name = "Accounts"', 'name = "Finance"'))
        running.process.send_signal(signal.SIGHUP)
        running.wait_until(
            lambda: running.status()["reloads"]["done"] == 1, 5, "the reload after SIGHUP"
        )
        assert running.status()["ports"][2]["name"] == "Finance"
        # A bad file on SIGHUP is refused and the core keeps running on the old config.
        config.write_text(office_config().replace('number = "203"', 'number = "2x3"'))
        running.process.send_signal(signal.SIGHUP)
        running.wait_until(
            lambda: running.status()["reloads"]["refused"] == 1, 5, "the refused reload"
        )
        status = running.status()
        assert "2x3" in status["reloads"]["last_error"]
        assert status["ports"][2]["number"] == "203"
        result = running.cli("reload", check=False)
        assert result.returncode != 0 and "extensions[2].number" in result.stderr
    finally:
        running.stop()
    assert running.process.returncode == 0


# ----- the control API, raw --------------------------------------------------------------


def test_bad_api_requests_get_an_error_and_the_server_keeps_answering(core: Core) -> None:
    bad_requests = [
        b"this is not json\n",
        b"[1, 2, 3]\n",
        b'{"cmd": "explode"}\n',
        b'{"no_cmd": true}\n',
        b'{"cmd": "calls", "last": "many"}\n',
        b'{"cmd": "calls", "last": 0}\n',
        b'{"cmd": "selftest"}\n',
        b'{"cmd": "sim", "action": "offhook", "target": "999"}\n',
        b'{"cmd": "sim", "action": "teleport"}\n',
        b"\xff\xfe\n",
    ]
    for data in bad_requests:
        reply = raw_exchange(core.socket, data)
        assert reply["ok"] is False, (data, reply)
        assert reply["error"], (data, reply)
    assert core.request({"cmd": "status"})["ok"] is True


def test_several_requests_share_one_connection(core: Core) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(core.socket))
        replies = sock.makefile("rb")
        sock.sendall(b'nonsense\n{"cmd": "status"}\n')
        first = json.loads(replies.readline())
        assert first["ok"] is False
        sock.sendall(b'{"cmd": "calls", "last": 1}\n')
        second, third = json.loads(replies.readline()), json.loads(replies.readline())
        assert second["ok"] is True and "status" in second
        assert third == {"ok": True, "calls": []}
        replies.close()


def test_huge_request_line_is_refused_and_the_server_keeps_answering(core: Core) -> None:
    huge = b'{"cmd": "status", "pad": "' + b"x" * 200_000 + b'"}\n'
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(core.socket))
        reply_data = b""
        # The server may close before taking all of it; its reply was sent first.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(huge)
        with contextlib.suppress(ConnectionResetError):
            reply_data = read_line(sock)
    assert reply_data, "the server answered nothing to an overlong request"
    reply = json.loads(reply_data)
    assert reply["ok"] is False and "too long" in reply["error"]
    # A line without an end, then the client goes away: nothing is stuck either.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(core.socket))
        sock.sendall(b'{"cmd": "sta')
    assert core.request({"cmd": "status"})["ok"] is True
    assert core.process.poll() is None


# ----- durability ------------------------------------------------------------------------


def test_call_record_survives_kill_9(data_dir: Path) -> None:
    running = Core(data_dir)
    try:
        running.wait_ready()
        running.cli("sim", "offhook", "202")
        running.cli("sim", "dial", "202", "203")
        running.wait_until(
            lambda: running.request({"cmd": "sim", "action": "state"})["sim"]["phones"]["3"][
                "ringing"
            ],
            5,
            "203 ringing",
        )
        running.cli("sim", "offhook", "203")
        running.wait_until(
            lambda: running.status()["ports"][1]["state"] == "connected", 5, "202 connected"
        )
        running.cli("sim", "onhook", "202")
        running.cli("sim", "onhook", "203")
        running.wait_until(lambda: len(calls_json(running)) == 1, 5, "the call record")
        (listed,) = calls_json(running)
        running.process.send_signal(signal.SIGKILL)
        assert running.process.wait(10) == -signal.SIGKILL
    finally:
        running.stop()
    database = data_dir / "cdr.sqlite3"
    connection = sqlite3.connect(database)
    try:
        rows = connection.execute(
            "SELECT call_id, caller_number, dialled, answered_extension, disposition FROM cdr"
        ).fetchall()
    finally:
        connection.close()
    assert rows == [(listed["call_id"], "202", "203", "203", "answered")]
    # The next start finds the stale socket of the killed process and takes over.
    assert (data_dir / "control.sock").exists()
    again = Core(data_dir)
    try:
        again.wait_ready()
        (listed_again,) = calls_json(again)
        assert listed_again["call_id"] == listed["call_id"]
    finally:
        again.stop()
    assert again.process.returncode == 0


def test_status_shows_the_smdr_listener_and_scheduled_reports(data_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "office.toml"
    config.write_text(office_config(f"""
[smdr]
enabled = true
tcp_listen = "127.0.0.1:{port}"

[[schedule.reports]]
name = "monthly-costs"
report = "extension"
format = "csv"
folder = "{tmp_path / 'reports'}"
"""), "utf-8")  # fmt: skip
    core = Core(data_dir, config)
    try:
        core.wait_ready()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            core.wait_until(lambda: core.status()["smdr"]["tcp"]["clients"] == 1, 5, "client seen")
            text = core.cli("status").stdout
        assert f"tcp 127.0.0.1:{port}: 1 clients" in text, text
        (line,) = [row for row in text.splitlines() if row.startswith("scheduled monthly-costs")]
        assert "(extension report): next " in line and "last done never" in line, line
    finally:
        core.stop()
