"""SMDR output settings (serial port and TCP listener); see docs/smdr.md.

Read once when the core starts: changing `[smdr]` needs a restart.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from firmware.config.fields import Name, Section


def _serial_url(value: str) -> str:
    if value and not (value.startswith("/") or re.fullmatch(r"[a-z0-9+]+://.*", value)):
        raise ValueError(
            f"serial url {value!r} must be a device path such as '/dev/ttyUSB0' or a "
            "pyserial URL such as 'socket://192.0.2.7:4000' or 'rfc2217://host:port'"
        )
    return value


def _line_label(value: str) -> str:
    if not re.fullmatch(r"[\x21-\x7e]{1,6}", value):
        raise ValueError(
            f"line label {value!r} must be 1 to 6 printable ASCII characters without spaces"
        )
    return value


SerialUrl = Annotated[str, AfterValidator(_serial_url)]
LineLabel = Annotated[str, AfterValidator(_line_label)]


class SmdrSerialConfig(Section):
    """The serial port a printer or call-accounting PC reads; empty `url`: no serial output."""

    url: SerialUrl = ""
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    data_bits: Literal[7, 8] = 8
    parity: Literal["none", "even", "odd"] = "none"
    stop_bits: Literal[1, 2] = 1
    flow_control: Literal["none", "rtscts", "xonxoff"] = "none"
    # A write that the port does not take within this time (printer off line holding CTS)
    # counts as a lost port: it is reopened and the record is sent again.
    write_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # Longest wait between attempts to reopen a lost port (doubling from half a second).
    reopen_max_s: float = Field(default=30.0, ge=1, le=3600)
    # Records waiting for the port; beyond it they are read back from the CDR store.
    queue_records: int = Field(default=1000, ge=10, le=100_000)


class SmdrConfig(Section):
    enabled: bool = False
    serial: SmdrSerialConfig = SmdrSerialConfig()
    # "host:port" of the TCP listener ("0.0.0.0:2300"); empty: no TCP output.
    tcp_listen: str = ""
    tcp_max_clients: int = Field(default=8, ge=1, le=64)
    # Records a TCP client may have waiting (in our buffer) before new ones are dropped for it.
    client_queue_records: int = Field(default=200, ge=1, le=100_000)
    # A client that takes nothing for this long while records wait is disconnected; 0: never.
    stall_timeout_s: float = Field(default=60.0, ge=0, le=86_400)
    # A header block before the first record and again after every N records; 0: once.
    header_every: int = Field(default=60, ge=0, le=10_000)
    # "auto": mm/dd/yy and 12 h when site.country is "us", else dd/mm/yy and 24 h.
    date_format: Literal["auto", "dd/mm/yy", "mm/dd/yy", "yy/mm/dd"] = "auto"
    time_format: Literal["auto", "24h", "12h"] = "auto"
    # What the CO column shows for a line or trunk (default: its name cut to 6 characters).
    line_labels: dict[Name, LineLabel] = Field(default_factory=dict)
    # Records written while the serial port was lost, or while no TCP client was connected,
    # are sent from the CDR store when it (or the first client) is back: at most this many.
    replay_limit: int = Field(default=1000, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _host_port(self) -> SmdrConfig:
        if self.tcp_listen:
            host, _, port = self.tcp_listen.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError(
                    f"tcp_listen {self.tcp_listen!r} must be host:port, e.g. '0.0.0.0:2300'"
                )
        return self
