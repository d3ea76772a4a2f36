"""E-mailing a finished report through the configured SMTP server (blocking: run in a thread).

The server's certificate is always checked (the system's CAs, or `ca_file`): a report
full of phone numbers and costs must not go to whoever answers on port 587.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from firmware.config.schedule_schema import SmtpConfig

CONTENT_TYPES = {
    ".csv": ("text", "csv"),
    ".xlsx": ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ".pdf": ("application", "pdf"),
    ".gz": ("application", "gzip"),
}
"""Attachment types by file extension (not `mimetypes`, whose table depends on the host)."""


class MailError(RuntimeError):
    """The report could not be handed to the mail server; the message says why."""


def build_message(
    sender: str, recipients: tuple[str, ...], subject: str, body: str, attachment: Path
) -> EmailMessage:
    """A plain-text message with the report attached under its own file name."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    message.set_content(body)
    maintype, subtype = CONTENT_TYPES.get(
        attachment.suffix.lower(), ("application", "octet-stream")
    )
    message.add_attachment(
        attachment.read_bytes(), maintype=maintype, subtype=subtype, filename=attachment.name
    )
    return message


def _tls_context(smtp: SmtpConfig) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=smtp.ca_file or None)


def send_message(smtp: SmtpConfig, message: EmailMessage) -> None:
    """Deliver `message` to its To recipients; raise MailError with the server's reason."""
    try:
        client: smtplib.SMTP
        if smtp.security == "ssl":
            client = smtplib.SMTP_SSL(
                smtp.host, smtp.port, timeout=smtp.timeout_s, context=_tls_context(smtp)
            )
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
        with client:
            client.ehlo()
            if smtp.security == "starttls":
                client.starttls(context=_tls_context(smtp))
                client.ehlo()
            if smtp.username:
                client.login(smtp.username, smtp.password)
            refused = client.send_message(message)
    except (smtplib.SMTPException, ssl.SSLError, OSError) as error:
        raise MailError(
            f"sending to {message['To']} through {smtp.host}:{smtp.port} failed: {error}"
        ) from error
    if refused:
        raise MailError(f"the server refused some recipients: {sorted(refused)}")


def mail_report(smtp: SmtpConfig, recipients: tuple[str, ...], subject: str, file: Path) -> None:
    """Build and send the message for one report file."""
    body = (
        f"{subject}\n\nThe report is attached ({file.name}, {file.stat().st_size} bytes).\n"
        "Sent by the telephone exchange's scheduler.\n"
    )
    send_message(smtp, build_message(smtp.sender, recipients, subject, body, file))
