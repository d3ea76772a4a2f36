"""REFER (RFC 3515) as call transfer: what the Refer-To asks for, and the NOTIFY bodies.

A phone transferring a call sends REFER with Refer-To naming the new party. Blind transfer
names a number (sip:203@pbx); attended transfer names the party already consulted and
carries a Replaces header inside the URI (RFC 3891) naming the consultation dialog:
<sip:203@pbx?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>. Call control gets the
number, or "replaces:<Call-ID>" for the attended case so it can find the consultation leg
by its Call-ID. The outcome goes back in NOTIFYs whose message/sipfrag body is a status
line (RFC 3420).
"""

from __future__ import annotations

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


def transfer_target(refer_to_values: list[str]) -> str:
    """The TRANSFER event's value for a REFER's Refer-To header fields.

    Exactly one Refer-To (RFC 3515 2.4.1), a sip/sips/tel URI. With a Replaces header:
    "replaces:<Call-ID>"; otherwise the user part (the number dialled). ReferError else.
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
        call_id = replaces.split(";", 1)[0].strip()
        if not call_id:
            raise ReferError("Refer-To Replaces without a Call-ID")
        return REPLACES_PREFIX + call_id
    if not uri.user:
        raise ReferError("Refer-To names no user (number) to transfer to")
    return uri.user
