"""The one exception SIP parsing raises, shared by the URI, header and message parsers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from firmware.sip.headers import Headers


class SipParseError(ValueError):
    """Bytes or text that do not follow the RFC 3261 grammar where it says MUST.

    `status_hint` is the response a UAS would send for a request that fails this way (400,
    505 for a SIP version we do not speak, 501 for an unknown method whose CSeq disagrees);
    None when no response may be sent, as for a malformed response. The caller decides.
    `headers` holds the header fields split so far, so a transport can still answer a bad
    request statelessly from its raw Via/From/To/Call-ID/CSeq (see make_response).
    """

    def __init__(
        self, reason: str, status_hint: int | None = 400, headers: Headers | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint
        self.headers = headers
