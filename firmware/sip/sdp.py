"""SDP (RFC 4566 subset) and the offer/answer model (RFC 3264) for audio calls.

We accept or offer exactly one audio stream of plain RTP (RTP/AVP, or RTP/AVPF without
using its feedback): every other m-line is answered with port 0, as RFC 3264 6 says.

Codec choice when answering: by default the first of OUR preferences that the offer
contains, not the offerer's first. Our mixer is narrowband, so a codec the phone prefers
(G.722) brings no quality but costs CPU that the 100-call budget does not have; with
`honour_offerer_order=True` the offerer's order wins instead (FreeSWITCH's "generous"
mode). The answer carries that one codec, plus telephone-event if the offer had it, with
the offer's payload type numbers, so the far end never has to switch codec mid-call.

Parsing is str.split only (no regexes): a body is parsed once per offer or answer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from firmware.media.codecs import (
    DEFAULT_TELEPHONE_EVENT_PT,
    TELEPHONE_EVENT_SPEC,
    default_codec_preference,
    spec_by_name,
    spec_by_payload_type,
)

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
RTP_PROFILES = ("RTP/AVP", "RTP/AVPF")
DEFAULT_PTIME = 20
HOLD_ADDRESSES = ("0.0.0.0", "::")  # RFC 2543 hold: "send me nothing"
_FIRST_DYNAMIC_PT = 96


class SdpError(ValueError):
    """A body that is not SDP we can read."""


class OfferRejectedError(SdpError):
    """No stream of the offer can be accepted: the SIP layer answers 488 Not Acceptable Here."""


# --------------------------------------------------------------------------- directions


def _direction(send: bool, receive: bool) -> str:
    if send:
        return "sendrecv" if receive else "sendonly"
    return "recvonly" if receive else "inactive"


def _sends(direction: str) -> bool:
    return direction in ("sendrecv", "sendonly")


def _receives(direction: str) -> bool:
    return direction in ("sendrecv", "recvonly")


def reverse_direction(direction: str) -> str:
    """The direction seen from the other end: sendonly <-> recvonly."""
    return _direction(_receives(direction), _sends(direction))


def intersect_directions(first: str, second: str) -> str:
    """What both allow: sendrecv & sendonly = sendonly, sendonly & recvonly = inactive."""
    return _direction(_sends(first) and _sends(second), _receives(first) and _receives(second))


# --------------------------------------------------------------------------- the model


@dataclass
class Origin:
    """The o= line. `session_version` must grow by one with every changed description."""

    username: str
    session_id: str
    session_version: int
    address: str
    network_type: str = "IN"
    address_type: str = "IP4"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.network_type} {self.address_type} {self.address}"
        )


@dataclass
class Connection:
    """The c= line, with any multicast TTL/count suffix dropped."""

    address: str
    network_type: str = "IN"
    address_type: str = "IP4"

    def __str__(self) -> str:
        return f"{self.network_type} {self.address_type} {self.address}"


@dataclass
class RtpMap:
    payload_type: int
    encoding_name: str
    clock_rate: int
    channels: int = 1

    def __str__(self) -> str:
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.payload_type} {self.encoding_name}/{self.clock_rate}{suffix}"


@dataclass
class MediaDescription:
    """One m= section. Attributes we do not interpret are kept, in order, in `attributes`."""

    media: str
    port: int
    protocol: str
    formats: list[str]
    connection: Connection | None = None
    rtpmaps: dict[int, RtpMap] = field(default_factory=dict)
    fmtps: dict[int, str] = field(default_factory=dict)
    ptime: int | None = None
    direction: str | None = None  # None: not given here (the session level or sendrecv)
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def payload_types(self) -> list[int]:
        return [int(fmt) for fmt in self.formats if fmt.isdigit()]

    def encoding(self, payload_type: int) -> RtpMap | None:
        """What a payload type means here: its rtpmap, or the static table of RFC 3551."""
        rtpmap = self.rtpmaps.get(payload_type)
        if rtpmap is not None:
            return rtpmap
        spec = spec_by_payload_type(payload_type)
        if spec is None:
            return None
        return RtpMap(payload_type, spec.name, spec.clock_rate)

    def attribute(self, name: str) -> str | None:
        for attribute_name, value in self.attributes:
            if attribute_name == name:
                return value
        return None

    def lines(self) -> list[str]:
        out = [f"m={self.media} {self.port} {self.protocol} {' '.join(self.formats)}"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={bandwidth}" for bandwidth in self.bandwidths)
        for payload_type in self.payload_types:
            rtpmap = self.rtpmaps.get(payload_type)
            if rtpmap is not None:
                out.append(f"a=rtpmap:{rtpmap}")
            fmtp = self.fmtps.get(payload_type)
            if fmtp is not None:
                out.append(f"a=fmtp:{payload_type} {fmtp}")
        if self.ptime is not None:
            out.append(f"a=ptime:{self.ptime}")
        out.extend(_attribute_line(name, value) for name, value in self.attributes)
        if self.direction is not None:
            out.append(f"a={self.direction}")
        return out


@dataclass
class SessionDescription:
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    time: str = "0 0"
    direction: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    def connection_of(self, media: MediaDescription) -> Connection | None:
        return media.connection if media.connection is not None else self.connection

    def direction_of(self, media: MediaDescription) -> str:
        """The stream's direction as written (media level, else session level, else sendrecv)."""
        return media.direction or self.direction or "sendrecv"

    def effective_direction(self, media: MediaDescription) -> str:
        """As written, less receiving when the address is 0.0.0.0 (RFC 2543 hold, RFC 3264 8.4)."""
        direction = self.direction_of(media)
        connection = self.connection_of(media)
        if connection is not None and connection.address in HOLD_ADDRESSES:
            return intersect_directions(direction, "sendonly")
        return direction

    def to_text(self) -> str:
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name}"]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines.extend(f"b={bandwidth}" for bandwidth in self.bandwidths)
        lines.append(f"t={self.time}")
        lines.extend(_attribute_line(name, value) for name, value in self.attributes)
        if self.direction is not None:
            lines.append(f"a={self.direction}")
        for media in self.media:
            lines.extend(media.lines())
        return "\r\n".join(lines) + "\r\n"

    def encode(self) -> bytes:
        return self.to_text().encode("utf-8")


def _attribute_line(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


# --------------------------------------------------------------------------- parsing


def _parse_int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SdpError(f"{what} {text!r} is not a number") from None


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpError(f"c= needs 3 fields, got {value!r}")
    return Connection(parts[2].split("/", 1)[0], parts[0], parts[1])


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(f"o= needs 6 fields, got {value!r}")
    return Origin(
        username=parts[0],
        session_id=parts[1],
        session_version=_parse_int(parts[2], "o= session version"),
        network_type=parts[3],
        address_type=parts[4],
        address=parts[5],
    )


def _parse_media(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"m= needs media, port and protocol, got {value!r}")
    port = _parse_int(parts[1].split("/", 1)[0], "m= port")
    if not 0 <= port <= 65535:
        raise SdpError(f"m= port {port} is outside 0..65535")
    return MediaDescription(media=parts[0], port=port, protocol=parts[2], formats=parts[3:])


def _media_attribute(media: MediaDescription, name: str, value: str | None) -> None:
    if name in DIRECTIONS and value is None:
        media.direction = name
    elif name == "rtpmap" and value:
        number, _, encoding = value.partition(" ")
        pieces = encoding.strip().split("/")
        if not number.isdigit() or len(pieces) < 2 or not pieces[1].isdigit():
            raise SdpError(f"bad rtpmap {value!r}")
        channels = int(pieces[2]) if len(pieces) > 2 and pieces[2].isdigit() else 1
        media.rtpmaps[int(number)] = RtpMap(int(number), pieces[0], int(pieces[1]), channels)
    elif name == "fmtp" and value:
        number, _, parameters = value.partition(" ")
        if number.isdigit():
            media.fmtps[int(number)] = parameters.strip()
    elif name == "ptime" and value:
        media.ptime = round(float(value)) if value.replace(".", "", 1).isdigit() else None
    else:
        media.attributes.append((name, value))


def parse_sdp(body: bytes | str) -> SessionDescription:
    """Parse a body; unknown line types and attributes are kept or skipped, never fatal."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    origin: Origin | None = None
    session = SessionDescription(origin=Origin("-", "0", 0, "0.0.0.0"))
    media: MediaDescription | None = None
    seen_version = False
    for raw_line in text.split("\n"):
        line = raw_line.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"not an SDP line: {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "v":
            if value.strip() != "0":
                raise SdpError(f"SDP version {value!r}, expected 0")
            seen_version = True
        elif kind == "o":
            origin = _parse_origin(value)
        elif kind == "s":
            session.session_name = value
        elif kind == "t":
            session.time = value
        elif kind == "c":
            connection = _parse_connection(value)
            if media is None:
                session.connection = connection
            else:
                media.connection = connection
        elif kind == "b":
            (media.bandwidths if media is not None else session.bandwidths).append(value)
        elif kind == "m":
            media = _parse_media(value)
            session.media.append(media)
        elif kind == "a":
            name, separator, attribute_value = value.partition(":")
            parsed_value = attribute_value if separator else None
            if media is not None:
                _media_attribute(media, name, parsed_value)
            elif name in DIRECTIONS and parsed_value is None:
                session.direction = name
            else:
                session.attributes.append((name, parsed_value))
        # i=, u=, e=, p=, z=, k=, r= carry nothing for a call: skipped.
    if not seen_version:
        raise SdpError("no v= line: not an SDP body")
    if origin is None:
        raise SdpError("no o= line")
    session.origin = origin
    return session


# --------------------------------------------------------------------------- our side


class LocalSdpSession:
    """Our o= line across one dialog's offers and answers.

    RFC 3264 8: a new offer or answer that differs from our previous one carries the
    session version plus one; an unchanged one (a session refresh) repeats it.
    """

    def __init__(
        self,
        address: str,
        *,
        username: str = "minipbx",
        session_id: int | None = None,
        session_name: str = "minipbx",
    ) -> None:
        identity = session_id if session_id is not None else random.SystemRandom().randrange(1, 1 << 31)
        self.address = address
        self.address_type = "IP6" if ":" in address else "IP4"
        self.username = username
        self.session_id = identity
        self.session_version = identity
        self.session_name = session_name
        self._previous: list[str] | None = None

    def describe(self, media: list[MediaDescription]) -> SessionDescription:
        rendered = [line for stream in media for line in stream.lines()]
        if self._previous is not None and rendered != self._previous:
            self.session_version += 1
        self._previous = rendered
        return SessionDescription(
            origin=Origin(
                self.username,
                str(self.session_id),
                self.session_version,
                self.address,
                address_type=self.address_type,
            ),
            session_name=self.session_name,
            connection=Connection(self.address, address_type=self.address_type),
            media=media,
        )


def _audio_stream(
    port: int,
    protocol: str,
    codecs: Sequence[tuple[int, str]],
    telephone_event: tuple[int, str] | None,
    direction: str,
    ptime: int,
) -> MediaDescription:
    media = MediaDescription("audio", port, protocol, [], ptime=ptime, direction=direction)
    for payload_type, name in codecs:
        media.formats.append(str(payload_type))
        media.rtpmaps[payload_type] = RtpMap(payload_type, name, 8000)
    if telephone_event is not None:
        payload_type, fmtp = telephone_event
        media.formats.append(str(payload_type))
        media.rtpmaps[payload_type] = RtpMap(payload_type, TELEPHONE_EVENT_SPEC.name, 8000)
        media.fmtps[payload_type] = fmtp
    return media


def make_offer(
    local: LocalSdpSession,
    *,
    port: int,
    codecs: Sequence[str] | None = None,
    direction: str = "sendrecv",
    telephone_event_pt: int | None = DEFAULT_TELEPHONE_EVENT_PT,
    ptime: int = DEFAULT_PTIME,
) -> SessionDescription:
    """An offer of one audio stream; hold is `direction="sendonly"`, resume "sendrecv"."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}")
    names = codecs if codecs is not None else default_codec_preference()
    formats: list[tuple[int, str]] = []
    next_dynamic = _FIRST_DYNAMIC_PT
    for name in names:
        spec = spec_by_name(name)
        if spec is None or not spec.audio:
            raise ValueError(f"unknown audio codec {name!r}")
        payload_type = spec.payload_type
        if payload_type is None:
            while next_dynamic == telephone_event_pt:
                next_dynamic += 1
            payload_type = next_dynamic
            next_dynamic += 1
        formats.append((payload_type, spec.name))
    if not formats:
        raise ValueError("an offer needs at least one codec")
    events = (
        (telephone_event_pt, TELEPHONE_EVENT_SPEC.default_fmtp or "0-16")
        if telephone_event_pt is not None
        else None
    )
    return local.describe([_audio_stream(port, "RTP/AVP", formats, events, direction, ptime)])


def _rejected(offered: MediaDescription) -> MediaDescription:
    return MediaDescription(offered.media, 0, offered.protocol, list(offered.formats) or ["0"])


def _choose_codec(
    offered: MediaDescription, preference: Sequence[str], honour_offerer_order: bool
) -> tuple[int, str] | None:
    wanted = [name.lower() for name in preference]
    candidates: list[tuple[int, int, str]] = []  # (rank, payload type, name)
    for position, payload_type in enumerate(offered.payload_types):
        encoding = offered.encoding(payload_type)
        if encoding is None or encoding.channels != 1:
            continue
        spec = spec_by_name(encoding.encoding_name)
        if spec is None or not spec.audio or spec.clock_rate != encoding.clock_rate:
            continue
        if spec.name.lower() not in wanted:
            continue
        rank = position if honour_offerer_order else wanted.index(spec.name.lower())
        candidates.append((rank, payload_type, spec.name))
    if not candidates:
        return None
    _, payload_type, name = min(candidates)
    return payload_type, name


def _offered_telephone_event(offered: MediaDescription) -> tuple[int, str] | None:
    """The offer's telephone-event at 8000 Hz (Linphone also offers 16 and 48 kHz ones)."""
    for payload_type in offered.payload_types:
        rtpmap = offered.rtpmaps.get(payload_type)
        if (
            rtpmap is not None
            and rtpmap.encoding_name.lower() == TELEPHONE_EVENT_SPEC.name
            and rtpmap.clock_rate == TELEPHONE_EVENT_SPEC.clock_rate
        ):
            return payload_type, offered.fmtps.get(payload_type) or "0-16"
    return None


def make_answer(
    offer: SessionDescription,
    local: LocalSdpSession,
    *,
    port: int,
    codecs: Sequence[str] | None = None,
    direction: str = "sendrecv",
    honour_offerer_order: bool = False,
    ptime: int = DEFAULT_PTIME,
) -> SessionDescription:
    """Our answer: the first acceptable audio stream accepted, every other m-line port 0.

    `direction` is what we want (sendonly while we hold the call); the answer gives what
    both sides allow. Raises OfferRejectedError when no stream can be accepted.
    """
    preference = codecs if codecs is not None else default_codec_preference()
    answer_media: list[MediaDescription] = []
    accepted = False
    for offered in offer.media:
        choice = None
        if (
            not accepted
            and offered.media == "audio"
            and offered.protocol in RTP_PROFILES
            and offered.port != 0
        ):
            choice = _choose_codec(offered, preference, honour_offerer_order)
        if choice is None:
            answer_media.append(_rejected(offered))
            continue
        accepted = True
        offered_direction = offer.effective_direction(offered)
        answer_direction = intersect_directions(reverse_direction(offered_direction), direction)
        answer_media.append(
            _audio_stream(
                port,
                offered.protocol,
                [choice],
                _offered_telephone_event(offered),
                answer_direction,
                ptime,
            )
        )
    if not accepted:
        raise OfferRejectedError("no audio stream with a codec we support (PCMU, PCMA, G722)")
    return local.describe(answer_media)


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True, slots=True)
class MediaParams:
    """What an offer and its answer settled, seen from our side of the call.

    `payload_type` and `telephone_event_pt` are the numbers to send with (the far end's);
    `direction` is ours: "sendonly" means we send and must not expect media.
    """

    codec: str
    payload_type: int
    telephone_event_pt: int | None
    remote_address: str
    remote_port: int
    direction: str
    ptime: int

    @property
    def remote(self) -> tuple[str, int]:
        return self.remote_address, self.remote_port


def _first_known_codec(
    answered: MediaDescription, offered: MediaDescription
) -> tuple[int, str] | None:
    """The answer's first audio format that we know: (its payload type, codec name)."""
    for payload_type in answered.payload_types:
        encoding = answered.encoding(payload_type) or offered.encoding(payload_type)
        spec = spec_by_name(encoding.encoding_name) if encoding is not None else None
        if spec is not None and spec.audio:
            return payload_type, spec.name
    return None


def _payload_type_of(media: MediaDescription, codec_name: str) -> int | None:
    for payload_type in media.payload_types:
        encoding = media.encoding(payload_type)
        if encoding is not None and encoding.encoding_name.lower() == codec_name.lower():
            return payload_type
    return None


def negotiated(
    offer: SessionDescription, answer: SessionDescription, *, local_is_offerer: bool = True
) -> MediaParams:
    """The audio stream that the answer accepted, from our side of the exchange."""
    for index, answered in enumerate(answer.media):
        if answered.media != "audio" or answered.port == 0 or index >= len(offer.media):
            continue
        offered = offer.media[index]
        remote_description, remote_media = (
            (answer, answered) if local_is_offerer else (offer, offered)
        )
        codec = _first_known_codec(answered, offered)
        if codec is None:
            continue
        # Send with the numbers the far end listed: they are what it expects to receive.
        payload_type = _payload_type_of(remote_media, codec[1]) if not local_is_offerer else None
        events = _offered_telephone_event(remote_media)
        if _offered_telephone_event(answered) is None or _offered_telephone_event(offered) is None:
            events = None
        connection = remote_description.connection_of(remote_media)
        if connection is None:
            raise SdpError("the accepted audio stream has no c= address")
        answer_direction = answer.effective_direction(answered)
        if local_is_offerer:
            ours = intersect_directions(
                reverse_direction(answer_direction), offer.direction_of(offered)
            )
        else:
            ours = intersect_directions(
                answer_direction, reverse_direction(offer.effective_direction(offered))
            )
        return MediaParams(
            codec=codec[1],
            payload_type=payload_type if payload_type is not None else codec[0],
            telephone_event_pt=events[0] if events is not None else None,
            remote_address=connection.address,
            remote_port=remote_media.port,
            direction=ours,
            ptime=remote_media.ptime or DEFAULT_PTIME,
        )
    raise OfferRejectedError("the answer accepted no audio stream")


def is_hold(description: SessionDescription) -> bool:
    """True when the first audio stream asks not to receive media (a=sendonly, a=inactive,
    or the RFC 2543 c=0.0.0.0): the sender has put the call on hold."""
    for media in description.media:
        if media.media == "audio" and media.port != 0:
            return not _receives(description.effective_direction(media))
    return False
