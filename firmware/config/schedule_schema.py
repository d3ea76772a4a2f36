"""Scheduled report delivery (folder, SMTP) and CDR retention; see docs/reports.md.

```toml
[[schedule.reports]]
name = "monthly-costs"        # also the file name: monthly-costs-2026-10.xlsx
report = "extension"          # a `minipbx report` kind
format = "xlsx"               # csv | csv-comma | csv-semicolon | xlsx | pdf
period = "monthly"            # the previous full month (weekly: the previous Monday-Sunday)
day = 1                       # monthly: day of the month it runs (1-28)
weekday = "monday"            # weekly: the day it runs
time = "06:00"                # local time (site.timezone)
folder = "/srv/reports"       # empty: DATA_DIR/reports
email = ["accounts@example.pt"]

[schedule.smtp]
host = "smtp.example.pt"
port = 587
security = "starttls"         # starttls | ssl | none
username = "pbx@example.pt"
password = "..."
from = "pbx@example.pt"

[schedule.retention]
months = 24                   # keep 24 months of CDRs; older ones are archived and pruned
folder = ""                   # empty: DATA_DIR/archive
```
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from firmware.config.fields import Name, Section

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
RETENTION_JOB = "retention"
"""The name of the scheduler's built-in archive-and-prune job (reserved for reports)."""


def _clock_time(value: str) -> str:
    match = re.fullmatch(r"([01][0-9]|2[0-3]):([0-5][0-9])", value)
    if not match:
        raise ValueError(f"time {value!r} must be HH:MM in 24-hour local time, e.g. '06:30'")
    return value


def _report_kind(value: str) -> str:
    from firmware.accounting.reports import REPORTS  # lazy: the reports need no config

    if value not in REPORTS:
        raise ValueError(f"report {value!r} is not a report kind; one of: {', '.join(REPORTS)}")
    return value


def _email_address(value: str) -> str:
    if not re.fullmatch(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[A-Za-z]{2,}", value):
        raise ValueError(f"e-mail address {value!r} must look like name@example.pt")
    return value


ClockTime = Annotated[str, AfterValidator(_clock_time)]
ReportKind = Annotated[str, AfterValidator(_report_kind)]
EmailAddress = Annotated[str, AfterValidator(_email_address)]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class ScheduledReportConfig(Section):
    """One report written (and e-mailed) every month or week, for the previous full period."""

    name: Name
    report: ReportKind
    # csv: the site's dialect ([reports] csv_dialect); csv-comma, csv-semicolon: that one.
    format: Literal["csv", "csv-comma", "csv-semicolon", "xlsx", "pdf"] = "xlsx"
    period: Literal["monthly", "weekly"] = "monthly"
    day: int = Field(default=1, ge=1, le=28)  # 29-31 do not exist every month
    weekday: Weekday = "monday"
    time: ClockTime = "06:00"
    folder: str = ""
    email: tuple[EmailAddress, ...] = ()
    # Extra filters handed to `minipbx report`, e.g. ["--direction", "outgoing"].
    arguments: tuple[str, ...] = ()


class SmtpConfig(Section):
    """The mail server scheduled reports are sent through."""

    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str = ""
    password: str = ""
    sender: EmailAddress = Field(alias="from")
    # A PEM file of the CA that signed the server's certificate, if not a public one.
    ca_file: str = ""
    timeout_s: float = Field(default=30.0, gt=0, le=300)

    @model_validator(mode="after")
    def _no_password_in_clear(self) -> SmtpConfig:
        if self.username and self.security == "none":
            raise ValueError(
                "security = 'none' would send the password unencrypted: use 'starttls' "
                "(usually port 587) or 'ssl' (usually port 465)"
            )
        return self


class RetentionConfig(Section):
    """How long CDRs stay in the database; older ones go to compressed CSV archives."""

    months: int | None = Field(default=None, ge=1, le=120)  # None: keep everything
    folder: str = ""
    day: int = Field(default=1, ge=1, le=28)
    time: ClockTime = "03:30"


class ScheduleConfig(Section):
    reports: tuple[ScheduledReportConfig, ...] = ()
    smtp: SmtpConfig | None = None
    retention: RetentionConfig = RetentionConfig()
    # A failed run is tried again this long after, until it succeeds or the next one is due.
    retry_minutes: int = Field(default=60, ge=1, le=1440)

    @model_validator(mode="after")
    def _names_and_mail(self) -> ScheduleConfig:
        names = [report.name for report in self.reports]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"report names must be unique: {', '.join(duplicates)} repeated")
        if RETENTION_JOB in names:
            raise ValueError(f"the report name {RETENTION_JOB!r} is reserved for CDR retention")
        mailed = [report.name for report in self.reports if report.email]
        if mailed and self.smtp is None:
            raise ValueError(
                f"report(s) {', '.join(mailed)} have e-mail recipients but there is no "
                "[schedule.smtp] section to send them through"
            )
        return self

    def report(self, name: str) -> ScheduledReportConfig | None:
        return next((report for report in self.reports if report.name == name), None)
