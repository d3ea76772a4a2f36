"""`minipbx line calibrate LINE NUMBER`: learn a city line's disconnect tone, noise and echo.

The running core does the call (control API `line_calibrate`); this prints what it found
and, with `--write`, stores the learned settings in that line's `[[lines]]` entry of the
config file (tomlkit: the installer's comments and layout stay), checks the whole file
still loads, replaces it atomically and asks the core to reload.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import tomlkit

from firmware.config.accounting_schema import config_folder
from firmware.config.load import ConfigError, load_config, parse_config
from firmware.media.calibrate import describe

_EMBEDDED = "<embedded default>"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `line calibrate` to the `minipbx` parser."""
    line = sub.add_parser("line", help="city line (FXO) installer tools")
    actions = line.add_subparsers(dest="line_command", required=True)
    calibrate = actions.add_parser(
        "calibrate",
        help="call out on a line, learn its disconnect tone, noise floor and echo path",
        description="The running core seizes LINE, dials NUMBER (one that answers busy or"
        " congestion, or a party who answers and then hangs up within the recording),"
        " records the line and prints what it measured. --write stores the learned"
        " settings in the config file and reloads the core.",
    )
    calibrate.add_argument("line", help="the line's name in [[lines]], e.g. city1")
    calibrate.add_argument("number", help="digits to dial (access code not included)")
    calibrate.add_argument(
        "--seconds", type=float, default=12.0, help="how long to record after dialling (4-120)"
    )
    calibrate.add_argument(
        "--no-probe", action="store_true", help="do not send the echo-path probe (noise burst)"
    )
    calibrate.add_argument(
        "--write", action="store_true", help="store the settings in the config file and reload"
    )
    calibrate.add_argument("--config", help="the core's config file (default: ask the core)")
    calibrate.add_argument("--data-dir", help="the core's data folder (its control socket)")
    calibrate.add_argument("--json", action="store_true")
    calibrate.set_defaults(func=cmd_calibrate)


def _socket(args: argparse.Namespace) -> Path:
    from firmware.app import default_data_dir

    if getattr(args, "socket", None):
        return Path(args.socket)
    if args.data_dir:
        return Path(args.data_dir) / "control.sock"
    config = load_config(args.config) if args.config else None
    return default_data_dir(config) / "control.sock"


def _call(args: argparse.Namespace, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
    from firmware.cli import request

    response = request(_socket(args), payload, timeout)
    if not response.get("ok"):
        raise SystemExit(f"minipbx: {response.get('error')}")
    return response


def cmd_calibrate(args: argparse.Namespace) -> int:
    payload = {
        "cmd": "line_calibrate",
        "line": args.line,
        "number": args.number,
        "seconds": args.seconds,
        "probe": not args.no_probe,
    }
    result = _call(args, payload, timeout=args.seconds + 90.0)["calibration"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"line {args.line}, dialled {args.number}:")
        for text in describe(result):
            print(f"  {text}")
    if not args.write:
        if not args.json:
            print("not written (add --write to store these settings and reload)")
        return 0
    path = args.config or _call(args, {"cmd": "status"}, 30.0)["status"]["config"]
    if not path or path == _EMBEDDED:
        raise SystemExit(
            "minipbx: the core runs on the embedded default config: there is no file to write;"
            " start it with --config FILE"
        )
    try:
        write_line_settings(Path(path), args.line, result["settings"])
    except (ConfigError, ValueError, OSError) as error:
        raise SystemExit(f"minipbx: {path} not changed: {error}") from None
    reload = _call(args, {"cmd": "reload"}, 30.0)
    restart = reload.get("needs_restart") or []
    note = f"; restart needed for: {', '.join(restart)}" if restart else ""
    print(f"written to {path} ([[lines]] {args.line}) and reloaded{note}", file=sys.stderr)
    return 0


def updated_config_text(text: str, line_name: str, settings: dict[str, Any]) -> str:
    """``text`` with ``settings`` set on the `[[lines]]` entry named ``line_name``; every
    other byte (comments, order, spacing) as it was."""
    document = tomlkit.parse(text)
    lines = document.get("lines")
    entry = None
    if lines is not None:
        entry = next((table for table in lines if table.get("name") == line_name), None)
    if entry is None:
        raise ValueError(f"no [[lines]] entry named {line_name!r} in the config file")
    for key, value in settings.items():
        entry[key] = value
    return tomlkit.dumps(document)


def write_line_settings(path: Path, line_name: str, settings: dict[str, Any]) -> None:
    """Store ``settings`` for ``line_name`` in the config file, only if the result loads."""
    text = path.read_text(encoding="utf-8")
    updated = updated_config_text(text, line_name, settings)
    with config_folder(path.resolve().parent):  # relative paths in it resolve as on load
        parse_config(updated, str(path))  # a file the core would refuse is never written
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(updated)
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
