"""Scheduled reports by e-mail, received by a local aiosmtpd server (plain, and STARTTLS with
a certificate made for the test and a login)."""

from __future__ import annotations

import email
import email.policy
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from firmware.accounting.schedule import ReportScheduler
from firmware.accounting.schedule_mail import MailError, build_message, send_message
from firmware.accounting.schedule_run import Job, JobRunner, Plan, jobs_from_config
from firmware.config.load import default_config_text, parse_config
from firmware.config.schedule_schema import SmtpConfig
from firmware.config.schema import Config

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def plain_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def smtp(port: int, **values: Any) -> SmtpConfig:
    return SmtpConfig.model_validate(
        {"host": "127.0.0.1", "port": port, "security": "none", "from": "pbx@office.pt", **values}
    )


def test_the_message_carries_the_report_with_its_type(tmp_path: Path) -> None:
    for name, expected in (
        ("costs-2026-10.xlsx", XLSX_TYPE),
        ("costs-2026-10.pdf", "application/pdf"),
        ("costs-2026-10.csv", "text/csv"),
    ):
        file = tmp_path / name
        file.write_bytes(b"PK\x03\x04 binary \xff\x00 content")
        message = build_message("pbx@office.pt", ("a@b.pt", "c@d.pt"), "Costs", "Body", file)
        [attachment] = list(message.iter_attachments())
        assert attachment.get_content_type() == expected
        assert attachment.get_filename() == name
        assert attachment.get_payload(decode=True) == file.read_bytes()
        assert message["To"] == "a@b.pt, c@d.pt"


def test_a_report_is_delivered_to_every_recipient(
    plain_server: tuple[Inbox, int], tmp_path: Path
) -> None:
    inbox, port = plain_server
    report = tmp_path / "monthly-costs-2026-10.xlsx"
    report.write_bytes(b"xlsx bytes")
    message = build_message("pbx@office.pt", ("a@b.pt", "c@d.pt"), "Costs", "Body", report)
    send_message(smtp(port), message)
    [envelope] = inbox.envelopes
    assert envelope.mail_from == "pbx@office.pt"
    assert envelope.rcpt_tos == ["a@b.pt", "c@d.pt"]
    received = email.message_from_bytes(envelope.content, policy=email.policy.default)
    [attachment] = list(received.iter_attachments())
    assert attachment.get_payload(decode=True) == b"xlsx bytes"


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    report = tmp_path / "r.csv"
    report.write_text("a,b\n")
    message = build_message("pbx@office.pt", ("a@b.pt",), "S", "B", report)
    with pytest.raises(MailError, match=r"sending to a@b.pt through 127.0.0.1:\d+ failed"):
        send_message(smtp(free_port(), timeout_s=5), message)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


def test_starttls_with_login_and_a_private_ca(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    import ssl

    key, cert = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret", handled=False)

    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
        authenticator=authenticator, auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    try:
        report = tmp_path / "r.pdf"
        report.write_bytes(b"%PDF-1.4")
        message = build_message("pbx@office.pt", ("a@b.pt",), "S", "B", report)
        settings = {
            "security": "starttls",
            "username": "pbx",
            "password": "s3cret",
            "ca_file": str(cert),
        }
        send_message(smtp(port, **settings), message)
        assert logins == [(b"pbx", b"s3cret")]
        assert len(inbox.envelopes) == 1
        with pytest.raises(MailError, match="failed"):
            send_message(smtp(port, **{**settings, "password": "wrong"}), message)
        with pytest.raises(MailError, match="CERTIFICATE_VERIFY_FAILED"):
            send_message(smtp(port, **{**settings, "ca_file": ""}), message)
    finally:
        controller.stop()
    assert len(inbox.envelopes) == 1


def mailing_config(tmp_path: Path, port: int) -> Config:
    text = (
        default_config_text()
        + f"""
[[schedule.reports]]
name = "monthly-costs"
report = "extension"
format = "xlsx"
folder = "{tmp_path / "reports"}"
email = ["accounts@office.pt"]

[schedule.smtp]
host = "127.0.0.1"
port = {port}
security = "none"
from = "pbx@office.pt"
"""
    )
    return parse_config(text, "<test>")


async def test_a_scheduled_report_is_written_then_mailed(
    plain_server: tuple[Inbox, int], tmp_path: Path
) -> None:
    inbox, port = plain_server
    config = mailing_config(tmp_path, port)
    real = JobRunner(config, tmp_path / "data")

    def plan(job: Job, due: datetime) -> Plan:
        planned = real.default_plan(job, due)
        write = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_bytes(b'PK fake xlsx')"
        command = [sys.executable, "-c", write, str(planned.partial)]
        return Plan(command, planned.period, planned.partial, planned.final)

    now = datetime(2026, 11, 20, tzinfo=UTC)
    scheduler = ReportScheduler(config, tmp_path / "data", clock=lambda: now, command_builder=plan)
    await scheduler.run_due(now)
    now = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    [result] = await scheduler.run_due(now)
    assert result.ok, result.error
    [envelope] = inbox.envelopes
    assert envelope.rcpt_tos == ["accounts@office.pt"]
    received = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert received["Subject"] == "office: monthly-costs 2026-11"
    [attachment] = list(received.iter_attachments())
    assert attachment.get_content_type() == XLSX_TYPE
    assert attachment.get_filename() == "monthly-costs-2026-11.xlsx"
    assert attachment.get_payload(decode=True) == b"PK fake xlsx"


async def test_a_mail_failure_fails_the_run_and_keeps_the_file(tmp_path: Path) -> None:
    config = mailing_config(tmp_path, free_port())
    real = JobRunner(config, tmp_path / "data")

    def plan(job: Job, due: datetime) -> Plan:
        planned = real.default_plan(job, due)
        write = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_bytes(b'PK')"
        command = [sys.executable, "-c", write, str(planned.partial)]
        return Plan(command, planned.period, planned.partial, planned.final)

    runner = JobRunner(config, tmp_path / "data", command_builder=plan)
    [job] = jobs_from_config(config)
    result = await runner.run(job, datetime(2026, 12, 1, 6, 0, tzinfo=UTC))
    assert not result.ok and "sending to accounts@office.pt" in result.error
    assert (tmp_path / "reports" / "monthly-costs-2026-11.xlsx").read_bytes() == b"PK"
