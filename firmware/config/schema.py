"""Typed configuration of the appliance.

The TOML file is validated into these frozen objects once; modules receive the objects
they need and never look at raw dictionaries. Field validators are small and named so
that every error teaches the installer how to fix it (Home Assistant style).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from firmware.config.accounting_schema import AccountingConfig
from firmware.config.fields import (
    DialCode,
    DigitPattern,
    ExtensionNumber,
    FeatureCode,
    Name,
    Seconds,
    Section,
)
from firmware.config.modes_schema import ModesConfig
from firmware.config.node_fields import Destination
from firmware.config.prompts_schema import PromptsConfig
from firmware.config.reports_schema import ReportsConfig
from firmware.config.routing_schema import RoutingConfig
from firmware.config.schedule_schema import ScheduleConfig
from firmware.config.smdr_schema import SmdrConfig

DESTINATION_KINDS = (
    "internal",
    "local",
    "national",
    "mobile",
    "free",
    "premium",
    "international",
    "emergency",
)


class SiteConfig(Section):
    name: Name = "office"
    country: str = "eu"
    timezone: str = "UTC"
    # The extension ranges this site owns (digit patterns); checked against [[extensions]]
    # and the sibling sites' ranges. Empty: not checked.
    extension_ranges: tuple[DigitPattern, ...] = ()


class AudioPortConfig(Section):
    """Where a port's audio is on a real card: a PortAudio/ALSA device and channel."""

    port: int = Field(ge=1)
    device: str
    channel: int = Field(default=0, ge=0, le=31)


class LineCardConfig(Section):
    url: str = "sim"
    baudrate: int = Field(default=115200, ge=1200, le=4_000_000)
    audio: Literal["memory", "alsa"] = "memory"
    fxs_ports: int = Field(default=8, ge=0, le=64)
    fxo_ports: int = Field(default=2, ge=0, le=64)
    audio_ports: tuple[AudioPortConfig, ...] = ()
    heartbeat_s: float = Field(default=1.0, gt=0, le=60)
    link_timeout_s: float = Field(default=3.0, gt=0, le=300)
    # Caller ID (CLIP) on the analogue ports. "card": the card sends and decodes it itself
    # (the caller in the RING command, CALLER_ID messages). "software": the appliance plays
    # the FSK/DTMF spill on FXS ports and decodes it from FXO line audio (docs/caller-id.md).
    caller_id: Literal["card", "software"] = "card"
    # The national way of sending it: "auto" is the site country's default (etsi, bell,
    # uk, dtmf, dtmf_dk, ...); a city line may set its own (`[[lines]] caller_id_profile`).
    caller_id_profile: str = "auto"

    @property
    def port_count(self) -> int:
        return self.fxs_ports + self.fxo_ports

    @property
    def fxs_range(self) -> range:
        return range(1, self.fxs_ports + 1)

    @property
    def fxo_range(self) -> range:
        return range(self.fxs_ports + 1, self.fxs_ports + self.fxo_ports + 1)

    @staticmethod
    def check_caller_id_profile(value: str) -> str:
        """A caller-ID profile name, or "auto"; the error lists the profiles."""
        if value == "auto":
            return value
        from firmware.media.clip_audio import PROFILES  # numpy-backed: only when one is named

        if value not in PROFILES:
            raise ValueError(
                f"caller_id_profile {value!r} is unknown: use 'auto' (the site country's "
                f"default) or one of {', '.join(PROFILES)}"
            )
        return value

    @model_validator(mode="after")
    def _caller_id_profile_known(self) -> LineCardConfig:
        self.check_caller_id_profile(self.caller_id_profile)
        return self

    @model_validator(mode="after")
    def _audio_ports_exist(self) -> LineCardConfig:
        if self.audio == "alsa" and self.url == "sim":
            raise ValueError("audio = 'alsa' needs a real card: set url to its serial port")
        for audio_port in self.audio_ports:
            if audio_port.port > self.port_count:
                raise ValueError(
                    f"audio_ports: port {audio_port.port} does not exist: "
                    f"the card has ports 1-{self.port_count}"
                )
        return self


class TimersConfig(Section):
    first_digit_s: Seconds = 10.0
    inter_digit_s: Seconds = 4.0
    ring_timeout_s: Seconds = 30.0
    lockout_tone_s: Seconds = 30.0
    fxo_dial_tone_wait_s: Seconds = 3.0
    fxo_ring_gone_s: Seconds = 7.0


class NumberingConfig(Section):
    operator: ExtensionNumber | None = None
    operator_code: DialCode | None = None
    emergency: tuple[DialCode, ...] = ("112",)
    destination_kinds: dict[str, tuple[DigitPattern, ...]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_kinds(self) -> NumberingConfig:
        for kind in self.destination_kinds:
            if kind not in DESTINATION_KINDS or kind in ("internal", "emergency"):
                allowed = ", ".join(
                    k for k in DESTINATION_KINDS if k not in ("internal", "emergency")
                )
                raise ValueError(f"destination kind {kind!r} is unknown; use one of {allowed}")
        return self


class ClassOfServiceConfig(Section):
    line_groups: tuple[Name, ...] = ()
    allow: tuple[str, ...] = ("internal",)
    # Account codes for outgoing calls: "none" (feature refused), "optional", or "forced"
    # (an outside call needs a code entered first; emergency numbers never do).
    account_code: Literal["none", "optional", "forced"] = "optional"

    @model_validator(mode="after")
    def _known_kinds(self) -> ClassOfServiceConfig:
        for kind in self.allow:
            if kind not in DESTINATION_KINDS:
                raise ValueError(
                    f"allow: {kind!r} is not a destination kind; use {', '.join(DESTINATION_KINDS)}"
                )
        return self


class LineGroupConfig(Section):
    """Outside lines reached by one access code: city lines (`[[lines]]` naming the group)
    and, tried in order when no city line of the group is free, SIP peers (failover)."""

    name: Name
    access_code: DialCode
    sip_peers: tuple[Name, ...] = ()


class LineConfig(Section):
    """A city line on an FXO port."""

    name: Name
    port: int = Field(ge=1)
    group: Name
    # Extensions that ring together for a city call, or one routing-graph node's name.
    incoming: tuple[Destination, ...] = ()
    disconnect: tuple[Literal["polarity", "loop_current", "tone"], ...] = (
        "polarity",
        "loop_current",
        "tone",
    )
    answer_supervision: Literal["none", "polarity"] = "none"
    dial_mode: Literal["dtmf", "pulse"] = "dtmf"
    wait_for_dial_tone: bool = True
    # Learned by `minipbx line calibrate` (or typed in): the tone this line's exchange
    # sends when the far end clears, in the indications syntax ("425/500,0/500",
    # "480+620/500,0/500"). None: the country's busy and congestion tones.
    disconnect_tone: str | None = None
    # Last resort: release a call after this long with silence both ways (0: never).
    max_silence_s: float = Field(default=0.0, ge=0, le=86_400)
    # Also learned: the noise floor (silence is 8 dB above it, at least -50 dBm0), gains on
    # the audio from and to the line, and the echo canceller's tail.
    noise_floor_dbm0: float | None = Field(default=None, ge=-100, le=-10)
    rx_gain_db: float = Field(default=0.0, ge=-12, le=12)
    tx_gain_db: float = Field(default=0.0, ge=-12, le=12)
    echo_tail_ms: int = Field(default=32, ge=0, le=128)

    @field_validator("echo_tail_ms")
    @classmethod
    def _echo_tail(cls, value: int) -> int:
        if 0 < value < 8:
            raise ValueError("echo_tail_ms must be 0 (off) or 8-128 ms")
        return value
    # With line_card.caller_id = "software": how this line's exchange sends caller ID, when
    # it differs from line_card.caller_id_profile ("auto": the site country's default).
    caller_id_profile: str | None = None

    @model_validator(mode="after")
    def _caller_id_profile_known(self) -> LineConfig:
        if self.caller_id_profile is not None:
            LineCardConfig.check_caller_id_profile(self.caller_id_profile)
        return self

    @model_validator(mode="after")
    def _disconnect_tone_usable(self) -> LineConfig:
        """A disconnect tone must parse, repeat and sound: say which part is wrong."""
        from firmware.media.tones import parse_tone  # numpy-backed: only when a tone is set

        text = self.disconnect_tone
        if text is None:
            return self
        try:
            tone = parse_tone(text)
        except ValueError as error:
            raise ValueError(f"disconnect_tone: {error}") from None
        if not tone.repeat:
            raise ValueError(
                f"disconnect_tone {text!r} plays once ('!'); an exchange repeats its disconnect tone"
            )
        if not tone.chords:
            raise ValueError(
                f"disconnect_tone {text!r} is only silence: give a frequency, e.g. 425/500,0/500"
            )
        high = max(frequency for chord in tone.chords for frequency in chord)
        if high >= 4000:
            raise ValueError(f"disconnect_tone {text!r}: {high:g} Hz is above the line's 4 kHz band")
        return self


class ExtensionConfig(Section):
    number: ExtensionNumber
    name: str = ""
    # The FXS port of its desk phone; None for an extension that is only SIP phones.
    port: int | None = Field(default=None, ge=1)
    class_of_service: Name = "default"
    forward_no_answer: ExtensionNumber | None = None
    # Set it and a SIP phone may register as this extension (digest authentication).
    sip_password: str | None = None


class SiblingSiteConfig(Section):
    """Another office of the company, with its own appliance: its extension ranges are
    dialled as short numbers here and ring there (SIP, digest-authenticated both ways with
    the shared `password`).

    A sibling's calls into this site are routed with `class_of_service` (None: internal
    numbers only, so a sibling never reaches an outside line unless config says so).
    When the sibling cannot be reached, `fallback = "pstn"` dials `fallback_number` (the
    office's public number, access code included, as dialled here) and then the extension
    as DTMF `fallback_dtmf_delay_s` after the line is through; "congestion" just says so.
    """

    name: Name
    extensions: tuple[DigitPattern, ...]
    host: str = ""
    port: int = Field(default=5060, ge=1, le=65535)
    transport: Literal["udp", "tcp"] = "udp"
    password: str = ""
    class_of_service: Name | None = None
    fallback: Literal["congestion", "pstn"] = "congestion"
    fallback_number: Annotated[str, Field(pattern=r"^[0-9*#]{0,24}$")] = ""
    fallback_dtmf_delay_s: float = Field(default=4.0, ge=0, le=60)
    keepalive_s: float = Field(default=30.0, ge=0, le=3600)
    codecs: tuple[Literal["PCMU", "PCMA", "G722"], ...] = ("PCMA", "PCMU")

    @model_validator(mode="after")
    def _link(self) -> SiblingSiteConfig:
        for pattern in self.extensions:
            if "." in pattern or "#" in pattern or "*" in pattern:
                raise ValueError(
                    f"extensions: {pattern!r}: a sibling range is fixed-length digits (e.g. '3xx'); "
                    "open-ended ranges would send any digits to the other office"
                )
        if self.host:
            _check_ip(self.host, "siblings are trusted by address")
            if len(self.password) < 8:
                raise ValueError("password: a sibling link needs a shared password of 8+ characters")
        if self.fallback == "pstn" and not self.fallback_number:
            raise ValueError("fallback = 'pstn' needs fallback_number (the office's public number)")
        return self


def _check_ip(host: str, why: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host {host!r} must be an IP address ({why})") from None


def _check_host(host: str) -> None:
    """An IP address or a DNS name (providers' registrars usually have names)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not re.fullmatch(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+", host):
        raise ValueError(f"host {host!r} must be an IP address or a host name")


class SipPeerConfig(Section):
    """A SIP trunk: a provider or PBX, trusted by its IP address, registering or both.

    `incoming` maps the called number (Request-URI user part, or the To header's with
    `did_from = "to"`, as registering providers send) to a destination: a list of
    extensions ringing together ("201,202") or "peer:NAME" to pass the call on to another
    peer, which needs `allow_tandem` (an outside line is never reached without it).
    "*" is the destination of numbers not listed.

    `registration = true` keeps a registration (digest, `username`/`password`) at the
    provider, retried with back-off; outgoing INVITEs answer the provider's challenge with
    the same credentials. `keepalive_s` sends OPTIONS that tell whether the peer is up: a
    trunk that is down (or not registered) is skipped by outbound routes.
    """

    name: Name
    host: str
    port: int = Field(default=5060, ge=1, le=65535)
    transport: Literal["udp", "tcp"] = "udp"
    incoming: dict[str, str] = Field(default_factory=dict)
    did_from: Literal["request_uri", "to"] = "request_uri"
    allow_tandem: bool = False
    max_channels: int = Field(default=30, ge=1, le=10_000)
    codecs: tuple[Literal["PCMU", "PCMA", "G722"], ...] = ("PCMU", "PCMA")
    dtmf_mode: Literal["rfc4733", "info", "inband"] = "rfc4733"
    # Outgoing calls to this peer: the number as the peer wants it, and who we say we are.
    outbound_strip: int = Field(default=0, ge=0, le=10)
    outbound_prepend: Annotated[str, Field(pattern=r"^\+?[0-9]{0,15}$")] = ""
    caller_id: Annotated[str, Field(pattern=r"^\+?[0-9]{0,20}$")] = ""
    # Registration and digest credentials (providers).
    registration: bool = False
    username: str = ""
    auth_username: str = ""  # when the provider's auth user differs from the AOR user
    password: str = ""
    domain: str = ""  # the AOR's domain; default: host
    register_expires: int = Field(default=600, ge=60, le=86_400)
    keepalive_s: float = Field(default=0.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _usable(self) -> SipPeerConfig:
        _check_host(self.host)
        if self.registration and not (self.username and self.password):
            raise ValueError("registration = true needs username and password")
        return self

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


class OutboundRouteConfig(Section):
    """Where numbers dialled after a line group's access code go, tried in order.

    The first route (in file order) whose `patterns` match the number (access code removed)
    and whose `line_groups` include the access code dialled (empty: any) gives the trunks:
    each entry of `via` is a SIP peer or a line group (its city lines, then its sip_peers).
    A trunk that is busy, down or full is skipped for the next one; a called party that is
    busy ends the call. `strip`/`prepend` rewrite the number first (e.g. strip 0, prepend
    +351); each peer's own rules apply after. Class of service is checked before any route.
    """

    name: Name
    patterns: tuple[DigitPattern, ...]
    line_groups: tuple[Name, ...] = ()
    via: tuple[Name, ...]
    strip: int = Field(default=0, ge=0, le=10)
    prepend: Annotated[str, Field(pattern=r"^\+?[0-9]{0,15}$")] = ""


class SipConfig(Section):
    """Where the SIP stack listens (UDP). Empty: SIP is off."""

    listen: str = ""
    media_address: str = ""  # the address written in SDP; default: the listen address
    rtp_ports: tuple[int, int] = (10000, 20000)
    # Offered in this order (RFC 8760: SHA-256 first). Phones that read only the first
    # challenge and know only MD5 (SIPp 3.6, baresip/libre 1.x, older handsets) need ["MD5"].
    digest_algorithms: tuple[Literal["SHA-256", "MD5"], ...] = ("SHA-256", "MD5")
    # Brute-force protection: this many failed authentications in a minute block the
    # source address for `auth_block_s` (doubling on repeat); trusted networks never are.
    auth_max_failures: int = Field(default=10, ge=1, le=1000)
    auth_block_s: float = Field(default=900.0, ge=1, le=86_400)
    trusted_networks: tuple[str, ...] = ()
    peers: tuple[SipPeerConfig, ...] = ()
    # The digest realm phones authenticate in; empty means the site name. Changing it
    # invalidates the stored HA1 values of every phone's account, so set it once.
    realm: str = ""

    @model_validator(mode="after")
    def _host_port(self) -> SipConfig:
        if self.listen:
            host, _, port = self.listen.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError(f"listen {self.listen!r} must be host:port, e.g. '0.0.0.0:5060'")
        return self


class StorageConfig(Section):
    data_dir: str = ""


class Config(Section):
    site: SiteConfig = SiteConfig()
    storage: StorageConfig = StorageConfig()
    sip: SipConfig = SipConfig()
    line_card: LineCardConfig = LineCardConfig()
    timers: TimersConfig = TimersConfig()
    tones: dict[str, str] = Field(default_factory=dict)
    numbering: NumberingConfig = NumberingConfig()
    classes_of_service: dict[Name, ClassOfServiceConfig] = Field(
        default_factory=lambda: {"default": ClassOfServiceConfig()}
    )
    line_groups: tuple[LineGroupConfig, ...] = ()
    lines: tuple[LineConfig, ...] = ()
    extensions: tuple[ExtensionConfig, ...] = ()
    feature_codes: dict[str, FeatureCode] = Field(default_factory=dict)
    sibling_sites: tuple[SiblingSiteConfig, ...] = ()
    outbound_routes: tuple[OutboundRouteConfig, ...] = ()
    accounting: AccountingConfig = AccountingConfig()
    smdr: SmdrConfig = SmdrConfig()
    reports: ReportsConfig = ReportsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    modes: ModesConfig = ModesConfig()
    routing: RoutingConfig = RoutingConfig()
    prompts: PromptsConfig = PromptsConfig()

    def sip_peer(self, name: str) -> SipPeerConfig | None:
        return next((p for p in self.sip.peers if p.name == name), None)

    def sibling_site(self, name: str) -> SiblingSiteConfig | None:
        return next((s for s in self.sibling_sites if s.name == name), None)

    def extension(self, number: str) -> ExtensionConfig | None:
        return next((e for e in self.extensions if e.number == number), None)

    def extension_on_port(self, port: int) -> ExtensionConfig | None:
        return next((e for e in self.extensions if e.port is not None and e.port == port), None)

    def line_on_port(self, port: int) -> LineConfig | None:
        return next((line for line in self.lines if line.port == port), None)

    def line_group(self, name: str) -> LineGroupConfig | None:
        return next((g for g in self.line_groups if g.name == name), None)
