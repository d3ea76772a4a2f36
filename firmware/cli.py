"""`minipbx`: run the core, check a config, and talk to a running core."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

from firmware.config.load import ConfigError, load_config


class KeyValueFormatter(logging.Formatter):
    """One machine-readable line per event: `ts=... level=... logger=... event=... k=v`."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"ts={stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} logger={record.name} "
        message = record.getMessage()
        line += message if message.startswith("event=") else f"msg={message!r}"
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True
    )


def _socket_path(args: argparse.Namespace) -> Path:
    from firmware.app import default_data_dir

    if args.socket:
        return Path(args.socket)
    config = load_config(args.config) if getattr(args, "config", None) else None
    return default_data_dir(config) / "control.sock"


def request(path: Path, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """One request/response on the control socket (blocking: the CLI has no event loop)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as error:
            raise SystemExit(
                f"minipbx: no running appliance at {path} ({error.strerror}); start it with `make run`"
            ) from None
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def _call(
    args: argparse.Namespace, payload: dict[str, Any], timeout: float = 30.0
) -> dict[str, Any]:
    response = request(_socket_path(args), payload, timeout)
    if not response.get("ok"):
        print(f"minipbx: {response.get('error')}", file=sys.stderr)
        raise SystemExit(1)
    return response


# ----- commands --------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from firmware.app import Appliance

    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2

    async def main() -> None:
        app = Appliance(config, args.config, Path(args.data_dir) if args.data_dir else None)
        await app.start()
        print(
            f"minipbx: running site {config.site.name!r}; control socket {app.socket_path}",
            file=sys.stderr,
        )
        try:
            await app.run_until_stopped()
        finally:
            await app.stop()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from firmware.media.prompt_library import checking_prompts

    data_dir = Path(args.data_dir) if args.data_dir else None
    try:
        with checking_prompts(data_dir):  # prompt names: the shipped library, uploads there
            config = load_config(args.file)
    except ConfigError as error:
        print(f"{error.source}: {len(error.errors)} error(s)")
        for line in error.errors:
            print(f"  {line}")
        return 1
    print(
        f"{args.file}: OK ({len(config.extensions)} extensions, {len(config.lines)} lines, "
        f"{len(config.line_groups)} line groups)"
    )
    if data_dir is None:
        print("  prompt names checked against the shipped library only (--data-dir DIR: uploads too)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = _call(args, {"cmd": "status"})["status"]
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    card = status["line_card"]
    print(f"site {status['site']}  up {status['uptime_s']} s  config {status['config']}")
    if status.get("modes"):
        from firmware.modes.service import describe

        print(describe(status["modes"]))
    print(
        f"line card {card['url']}: {card['link']}  firmware {card['firmware']}  {card['last_error']}"
    )
    print("port kind number  name              state")
    for port in status["ports"]:
        print(
            f"{port['port']:>4} {port['kind']:<4} {port['number']:<7} {port['name'][:17]:<17} {port['state']}"
        )
    print(f"calls in progress: {len(status['calls'])}   lines in use: {status['lines_in_use']}")
    for call in status["calls"]:
        legs = " <-> ".join(
            f"{leg['number'] or leg['leg']}({leg['state']})" for leg in call["legs"]
        )
        print(
            f"  #{call['id']} {call['direction']} {call['caller']} dialled {call['dialled']}: {legs}"
        )
    sip = status.get("sip")
    if sip:
        print(f"sip {sip['listen']}: {sip['datagrams_in']} datagrams, {sip['malformed']} malformed, "
              f"{sip['blocked']} from blocked sources")  # fmt: skip
        registrar = sip.get("registrar") or {}
        for registration in registrar.get("registrations", []):
            print(f"  registered {registration['aor']} at {registration['contact']} "
                  f"from {registration['source']} ({registration['expires_in']} s left)")  # fmt: skip
        for blocked in (registrar.get("guard") or {}).get("blocked", []):
            print(f"  blocked {blocked['source']} for {blocked['remaining_s']} s more "
                  f"(offence {blocked['offence']})")  # fmt: skip
        for name, trunk in (sip.get("trunks") or {}).items():
            print(f"  trunk {name} {trunk['host']}: {_availability(trunk)}, {trunk['calls']} calls"
                  f"{_registration_text(trunk.get('registration'))}")  # fmt: skip
        for name, site in (sip.get("siblings") or {}).items():
            print(f"  sibling {name} {site['host'] or '(no link)'}: {_availability(site)}, {site['calls']} calls, "
                  f"{site['auth_refused']} refused")  # fmt: skip
    smdr = status.get("smdr") or {}
    if smdr.get("enabled"):
        serial, tcp = smdr.get("serial"), smdr.get("tcp")
        print(f"smdr: {smdr['records']} records")
        if serial:
            print(f"  serial {serial['url']}: {serial['state']}, {serial['sent']} sent, "
                  f"{serial['replayed']} replayed {serial['last_error'] or ''}")  # fmt: skip
        if tcp:
            print(f"  tcp {tcp['address']}: {tcp['clients']} clients, {tcp['sent']} sent, "
                  f"{tcp['dropped']} dropped for slow clients")  # fmt: skip
    for name, job in ((status.get("scheduler") or {}).get("jobs") or {}).items():
        last = job.get("last_success") or "never"
        error = f", failing: {job['last_error']}" if job.get("consecutive_failures") else ""
        what = f"{job['report']} report" if job.get("report") else job["kind"]
        print(f"scheduled {name} ({what}): next {job['next_due']}, last done {last}{error}")
    mixer = status["mixer"]
    print(
        f"mixer: tick lateness p50 {mixer['late_p50_ms']} ms  p99 {mixer['late_p99_ms']} ms  "
        f"max {mixer['late_max_ms']} ms  frames dropped {mixer['frames_dropped']}  "
        f"slots {mixer['slots_in_use']}/{mixer['capacity']}"
    )
    return 0


def _availability(entry: dict[str, Any]) -> str:
    reachable = entry.get("reachable")
    shown = "up" if entry.get("available") else "DOWN"
    return f"{shown} (keep-alive: {reachable})" if reachable else shown


def _registration_text(registration: dict[str, Any] | None) -> str:
    if not registration:
        return ""
    text = f", registration {registration['state']}"
    if registration.get("status_code"):
        text += f" ({registration['status_code']} {registration.get('reason') or ''})".rstrip()
    if registration.get("next_attempt_in_s") is not None and registration["state"] != "registered":
        text += f", retry in {registration['next_attempt_in_s']} s"
    return text


def cmd_calls(args: argparse.Namespace) -> int:
    calls = _call(args, {"cmd": "calls", "last": args.last})["calls"]
    if args.json:
        print(json.dumps(calls, indent=2))
        return 0
    print(
        f"{'start (UTC)':<20} {'dir':<8} {'from':<14} {'dialled':<16} {'answered':<8} {'line':<8} "
        f"{'secs':>6} disposition"
    )
    for call in calls:
        print(
            f"{call['start'][:19]:<20} {call['direction']:<8} {call['caller_number'][:14]:<14} "
            f"{call['dialled'][:16]:<16} {call['answered_extension'] or '-':<8} {call['line'] or '-':<8} "
            f"{call['billable_s']:>6.0f} {call['disposition']} {call['cause']}"
        )
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    response = _call(args, {"cmd": "reload"})
    restart = response.get("needs_restart") or []
    print("reloaded" + (f"; restart needed for: {', '.join(restart)}" if restart else ""))
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    result = _call(args, {"cmd": "selftest", "a": args.ext_a, "b": args.ext_b}, timeout=60)[
        "result"
    ]
    for name, value in result["figures"].items():
        print(f"  {name}: {value}")
    for problem in result["problems"]:
        print(f"  problem: {problem}")
    print("PASS" if result["passed"] else "FAIL")
    return 0 if result["passed"] else 1


def cmd_sim(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"cmd": "sim", "action": args.action, "target": args.target or ""}
    if args.action == "dial":
        if not args.extra:
            raise SystemExit("minipbx: sim dial TARGET DIGITS")
        payload["digits"] = args.extra
    elif args.action == "ring":
        payload["number"], payload["name"] = args.extra or "", args.name or ""
    elif args.action == "hangup" and args.extra:
        payload["method"] = args.extra
    elif args.action == "say":
        payload["frequency"], payload["ms"] = float(args.extra or 1004), args.ms
    elif args.action == "capture":
        if not args.extra:
            raise SystemExit("minipbx: sim capture TARGET FILE.wav [--seconds N]")
        payload["path"], payload["seconds"] = str(Path(args.extra).resolve()), args.seconds
    print(json.dumps(_call(args, payload)["sim"], indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minipbx", description="Office telephone exchange")
    parser.add_argument("--socket", help="control socket of the running core")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the telephony core")
    run.add_argument("--config", help="TOML file (default: the embedded default office)")
    run.add_argument("--data-dir", help="database and control socket folder")
    run.add_argument("--log-level", default="info")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file, print every error")
    check.add_argument("file")
    check.add_argument(
        "--data-dir", help="data folder whose uploaded prompts count (default: shipped ones only)"
    )
    check.set_defaults(func=cmd_check_config)

    for name, func, text in (
        ("status", cmd_status, "ports, calls in progress, lines in use, mixer health"),
        ("calls", cmd_calls, "the latest call records"),
        ("reload", cmd_reload, "validate and apply the config file (same as SIGHUP)"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--config", help="find the core's socket through this config")
        command.add_argument("--json", action="store_true")
        command.set_defaults(func=func)
    sub.choices["calls"].add_argument("--last", type=int, default=20)

    selftest = sub.add_parser("selftest", help="installer diagnostics against the running core")
    selftest.add_argument("kind", choices=["call"])
    selftest.add_argument("ext_a")
    selftest.add_argument("ext_b")
    selftest.add_argument("--config")
    selftest.set_defaults(func=cmd_selftest)

    sim = sub.add_parser("sim", help="script the simulated line card of a running core")
    sim.add_argument(
        "action",
        choices=[
            "offhook",
            "onhook",
            "flash",
            "dial",
            "ring",
            "hangup",
            "say",
            "capture",
            "unplug",
            "plug",
            "state",
        ],
    )
    sim.add_argument("target", nargs="?", help="extension (or pN for a port), or line name")
    sim.add_argument(
        "extra",
        nargs="?",
        help="dial: digits; ring: caller number; hangup: method; say: Hz; capture: WAV file",
    )
    sim.add_argument("--name", help="caller name for ring")
    sim.add_argument("--ms", type=int, default=1000, help="say: tone length")
    sim.add_argument("--seconds", type=float, default=5.0, help="capture: how much audio")
    sim.add_argument("--config")
    sim.set_defaults(func=cmd_sim)

    from firmware.accounting import cli_reports, cli_schedule, cli_smdr, cli_tariff
    from firmware.features import cli_queue
    from firmware.lines import cli_line
    from firmware.media import cli_prompts
    from firmware.modes import cli_modes

    for module in (
        cli_tariff, cli_reports, cli_smdr, cli_schedule, cli_prompts, cli_modes, cli_queue,
        cli_line,
    ):  # fmt: skip
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
