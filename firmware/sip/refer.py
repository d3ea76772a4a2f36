"""REFER (RFC 3515) as call transfer: what the Refer-To asks for, and the NOTIFY bodies.

A phone transferring a call sends REFER with Refer-To naming the new party. Blind transfer
names a number (sip:203@pbx); attended transfer names the party already consulted and
carries a Replaces header inside the URI (RFC 3891) naming the consultation dialog:
<sip:203@pbx?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>. Call control gets the
number, or "replaces:<Call-ID>" for the attended case so it can find the consultation leg
by its Call-ID; the leg first checks both tags against that dialog (`Replaces.names`), so
only a party of the consultation dialog can name it. The outcome goes back in NOTIFYs
whose message/sipfrag body is a status line (RFC 3420).
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.sip.headers_values import parse_name_addr
from firmware.sip.message_errors import SipParseError
from firmware.sip.uri import SipUri

SIPFRAG = "message/sipfrag;version=2.0"
TRYING = b"SIP/2.0 100 Trying\r\n"
SUCCEEDED = b"SIP/2.0 200 OK\r\n"
FAILED = b"SIP/2.0 503 Service Unavailable\r\n"
REPLACES_PREFIX = "replaces:"


class ReferError(ValueError):
    """A Refer-To that names nothing we can transfer to (answered 400)."""


@dataclass(frozen=True)
class Replaces:
    """A Replaces value (RFC 3891 6.1): the dialog to take over, with its tags as seen by
    the UA that receives it (to-tag: that UA's own tag, from-tag: its far end's)."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False

    def names(self, call_id: str, local_tag: str, remote_tag: str | None, *, confirmed: bool) -> bool:
        """Does this value name our dialog (RFC 3891 3): same Call-ID, its to-tag ours, its
        from-tag the far end's; "early-only" names a dialog not yet answered only."""
        return (
            self.call_id == call_id
            and self.to_tag == local_tag
            and self.from_tag == (remote_tag or "")
            and not (self.early_only and confirmed)
        )


def parse_replaces(value: str) -> Replaces:
    """A Replaces value: a Call-ID, then exactly one to-tag and one from-tag (RFC 3891
    6.1), and an optional early-only flag; ReferError when any of them is missing."""
    call_id, *params = (part.strip() for part in value.split(";"))
    if not call_id:
        raise ReferError("Replaces without a Call-ID")
    tags: dict[str, list[str]] = {"to-tag": [], "from-tag": []}
    early_only = False
    for param in params:
        name, _, tag = param.partition("=")
        name = name.strip().lower()
        if name in tags:
            tags[name].append(tag.strip())
        elif name == "early-only":
            early_only = True
    for name, found in tags.items():
        if len(found) != 1 or not found[0]:
            raise ReferError(f"Replaces needs exactly one {name}")
    return Replaces(call_id, tags["to-tag"][0], tags["from-tag"][0], early_only)


@dataclass(frozen=True)
class ReferTarget:
    """What a Refer-To asks for: a number (blind transfer) or a dialog to replace."""

    number: str = ""
    replaces: Replaces | None = None

    @property
    def event_value(self) -> str:
        """The TRANSFER event's value: the number, or "replaces:<Call-ID>"."""
        if self.replaces is not None:
            return REPLACES_PREFIX + self.replaces.call_id
        return self.number


def transfer_target(refer_to_values: list[str]) -> str:
    """The TRANSFER event's value for a REFER's Refer-To header fields (see `refer_target`)."""
    return refer_target(refer_to_values).event_value


def refer_target(refer_to_values: list[str]) -> ReferTarget:
    """What a REFER's Refer-To header fields ask for.

    Exactly one Refer-To (RFC 3515 2.4.1), a sip/sips/tel URI. With a Replaces header: the
    dialog it names; otherwise the user part (the number dialled). ReferError else.
    """
    if len(refer_to_values) != 1:
        raise ReferError(f"{len(refer_to_values)} Refer-To header fields, one expected")
    try:
        address = parse_name_addr(refer_to_values[0], "Refer-To")
    except SipParseError as error:
        raise ReferError(f"Refer-To: {error}") from None
    uri = address.uri
    if not isinstance(uri, SipUri):
        raise ReferError(f"Refer-To scheme {uri.scheme!r} is not sip, sips or tel")
    replaces = next((value for name, value in uri.headers.items() if name.lower() == "replaces"), None)
    if replaces is not None:
        return ReferTarget(replaces=parse_replaces(replaces))
    if not uri.user:
        raise ReferError("Refer-To names no user (number) to transfer to")
    return ReferTarget(number=uri.user)
