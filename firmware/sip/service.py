"""The SIP transaction user of the appliance: what each incoming request gets.

Requests are dispatched by method to small handlers. Methods the appliance does not offer
yet are refused the way RFC 3261 8.2.1 says (405 with the Allow list), so a peer learns
what it can do instead of timing out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from firmware.sip.message import Request, Response, make_response
from firmware.sip.stack import Address, SipStack
from firmware.sip.transaction import ServerTransaction

log = logging.getLogger(__name__)

USER_AGENT = "minipbx"
Handler = Callable[[ServerTransaction, Request, Address], None]


class SipService:
    def __init__(self, site: str) -> None:
        self.site = site
        self.stack = SipStack(self._on_request)
        self.handlers: dict[str, Handler] = {"OPTIONS": self._options}
        self.requests_by_method: dict[str, int] = {}

    @property
    def allow(self) -> str:
        return ", ".join(sorted({*self.handlers, "ACK"}))

    async def start(self, host: str, port: int) -> Address:
        return await self.stack.start(host, port)

    async def stop(self) -> None:
        await self.stack.stop()

    def _on_request(
        self, transaction: ServerTransaction | None, request: Request, source: Address
    ) -> None:
        method = request.method
        self.requests_by_method[method] = self.requests_by_method.get(method, 0) + 1
        if transaction is None:  # an ACK for a 2xx: belongs to a dialog (none yet)
            return
        handler = self.handlers.get(method)
        if handler is not None:
            handler(transaction, request, source)
            return
        response = make_response(request, 405)
        response.headers.add("Allow", self.allow)
        self._finish(response)
        self.stack.respond(transaction, response)

    def _finish(self, response: Response) -> None:
        response.headers.add("Server", f"{USER_AGENT} ({self.site})")

    def _options(self, transaction: ServerTransaction, request: Request, _source: Address) -> None:
        """Capabilities query and the usual keep-alive of phones and providers."""
        response = make_response(request, 200)
        response.headers.add("Allow", self.allow)
        response.headers.add("Accept", "application/sdp")
        response.headers.add("Supported", "")
        self._finish(response)
        self.stack.respond(transaction, response)

    def status(self) -> dict[str, Any]:
        counters = self.stack.counters
        host, port = self.stack.local_address
        return {
            "listen": f"udp:{host}:{port}",
            "datagrams_in": counters.datagrams_in,
            "malformed": counters.malformed,
            "answered_400": counters.answered_400,
            "blocked": counters.blocked,
            "requests": dict(self.requests_by_method),
            "transactions": self.layer_size,
        }

    @property
    def layer_size(self) -> int:
        return len(self.stack.layer)
