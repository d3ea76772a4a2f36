"""The core's local control API: one JSON object per line over a unix socket.

Used by the `minipbx` CLI now and by the web UI process later. A unix socket keeps it
local by construction (filesystem permissions, no port to firewall). Protocol, documented
in docs/control-api.md: the client sends `{"cmd": NAME, ...}\\n`, the server answers one
line `{"ok": true, ...}` or `{"ok": false, "error": TEXT}`; several requests may share a
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.calls.cdr import record_to_json

if TYPE_CHECKING:
    from firmware.app import Appliance

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 64 * 1024

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ApiError(Exception):
    pass


class ControlServer:
    def __init__(self, app: Appliance) -> None:
        self.app = app
        self._server: asyncio.AbstractServer | None = None
        self._path: Path | None = None
        self.handlers: dict[str, Handler] = {
            "status": self._status,
            "calls": self._calls,
            "reload": self._reload,
            "sim": self._sim,
            "selftest": self._selftest,
            "line_calibrate": self._line_calibrate,
        }

    async def start(self, path: Path) -> None:
        await asyncio.to_thread(self._remove_stale, path)
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(path), limit=MAX_REQUEST_BYTES
        )
        os.chmod(path, 0o660)
        self._path = path
        log.info("event=api_listening socket=%s", path)

    @staticmethod
    def _remove_stale(path: Path) -> None:
        """A socket file left by a killed process; refuse if another core is really there."""
        if not path.exists():
            return
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
        finally:
            probe.close()
        raise RuntimeError(f"another appliance is already running on {path}")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    await self._reply(writer, {"ok": False, "error": "request too long"})
                    break
                if not line:
                    break
                await self._reply(writer, await self.handle_line(line))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, response: dict[str, Any]) -> None:
        writer.write(json.dumps(response, default=str).encode() + b"\n")
        await writer.drain()

    async def handle_line(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ApiError("a request is a JSON object")
            handler = self.handlers.get(str(request.get("cmd")))
            if handler is None:
                raise ApiError(
                    f"unknown cmd {request.get('cmd')!r}; known: {', '.join(self.handlers)}"
                )
            return {"ok": True} | await handler(request)
        except json.JSONDecodeError as error:
            return {"ok": False, "error": f"not JSON: {error}"}
        except KeyError as error:
            return {"ok": False, "error": f"missing field {error}"}
        except (ApiError, ValueError, TypeError, TimeoutError) as error:
            return {"ok": False, "error": str(error) or type(error).__name__}
        except Exception as error:
            log.exception("event=api_request_failed")
            return {"ok": False, "error": f"internal error: {error}"}

    # ----- commands ------------------------------------------------------------------------

    async def _status(self, _request: dict[str, Any]) -> dict[str, Any]:
        return {"status": self.app.status()}

    async def _calls(self, request: dict[str, Any]) -> dict[str, Any]:
        last = int(request.get("last", 20))
        if not 0 < last <= 10_000:
            raise ApiError("last must be 1..10000")
        assert self.app.cdr is not None
        records = await self.app.cdr.async_recent(last)
        return {"calls": [record_to_json(r) for r in records]}

    async def _reload(self, _request: dict[str, Any]) -> dict[str, Any]:
        result = await self.app.reload()
        if not result.get("ok"):
            raise ApiError(result["error"] + "".join(f"\n  {e}" for e in result.get("errors", [])))
        return {"needs_restart": result["needs_restart"]}

    async def _sim(self, request: dict[str, Any]) -> dict[str, Any]:
        from firmware.simcontrol import sim_command

        return await sim_command(self.app, request)

    async def _selftest(self, request: dict[str, Any]) -> dict[str, Any]:
        from firmware.selftest import selftest_call

        result = await selftest_call(self.app, str(request["a"]), str(request["b"]))
        return {"result": result}

    async def _line_calibrate(self, request: dict[str, Any]) -> dict[str, Any]:
        """Call out on a city line and learn its disconnect tone (docs/disconnect-supervision.md)."""
        from firmware.lines.calibration import calibrate_configured_line

        result = await calibrate_configured_line(
            self.app,
            str(request["line"]),
            str(request["number"]),
            seconds=float(request.get("seconds", 12.0)),
            probe=bool(request.get("probe", True)),
        )
        return {"calibration": result}
