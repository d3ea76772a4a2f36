"""`minipbx tariff ...` and `minipbx prepaid ...` (registered by firmware/cli.py).

`tariff check` reports a config's tariffs (prefix conflicts, overrides), `tariff price` says
what one call would cost, `tariff rerate` recomputes a period's rating. `prepaid list`,
`topup` and `ledger` manage prepaid balances in the CDR database. Each accepts `--config`
(default: the embedded default) and `--data-dir` (default: the appliance's data folder).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo

from firmware.config.accounting_schema import (
    TariffConfig,
    config_folder,
    cross_check_accounting,
)
from firmware.config.load import ConfigError, load_config
from firmware.config.schema import Config


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the `minipbx` parser."""
    tariff = sub.add_parser("tariff", help="check tariffs, price a call, re-rate a period")
    tariff_sub = tariff.add_subparsers(dest="tariff_command", required=True)

    check = tariff_sub.add_parser("check", help="tariff tables: prefix conflicts and overrides")
    _common(check, data_dir=False)
    check.add_argument("--quiet", action="store_true", help="errors and the summary only")
    check.set_defaults(func=cmd_tariff_check)

    price = tariff_sub.add_parser("price", help="what a call would cost with this config")
    _common(price, data_dir=False)
    price.add_argument("number", help="the outside number (as dialled after the access code)")
    price.add_argument("--seconds", type=float, default=60.0, help="answered duration")
    price.add_argument("--at", help="answer time, local 'YYYY-MM-DD HH:MM' (default: now)")
    price.add_argument("--via", help="line group, trunk or sibling site (default: default tariff)")
    price.add_argument("--incoming", action="store_true", help="price an incoming call to this DID")
    price.set_defaults(func=cmd_tariff_price)

    rerate = tariff_sub.add_parser("rerate", help="recompute costs of calls in a period")
    _common(rerate)
    rerate.add_argument("--from", dest="start", required=True, type=_day, help="YYYY-MM-DD (local)")
    rerate.add_argument("--to", dest="end", required=True, type=_day, help="YYYY-MM-DD, inclusive")
    rerate.set_defaults(func=cmd_tariff_rerate)

    prepaid = sub.add_parser("prepaid", help="prepaid balances: list, top up, ledger")
    prepaid_sub = prepaid.add_subparsers(dest="prepaid_command", required=True)
    listing = prepaid_sub.add_parser("list", help="every account's balance and state")
    _common(listing)
    listing.set_defaults(func=cmd_prepaid_list)
    topup = prepaid_sub.add_parser("topup", help="credit an account (negative: correct it)")
    _common(topup)
    topup.add_argument("name")
    topup.add_argument("amount", help="e.g. 20 or 12.50 (a decimal comma works too)")
    topup.add_argument("--note", default="", help="kept in the ledger entry")
    topup.set_defaults(func=cmd_prepaid_topup)
    history = prepaid_sub.add_parser("ledger", help="an account's latest ledger entries")
    _common(history)
    history.add_argument("name")
    history.add_argument("--last", type=int, default=30)
    history.set_defaults(func=cmd_prepaid_ledger)


def _common(parser: argparse.ArgumentParser, data_dir: bool = True) -> None:
    parser.add_argument("--config", help="TOML file (default: the embedded default office)")
    if data_dir:
        parser.add_argument(
            "--data-dir", help="the folder of cdr.sqlite3 (default: the appliance's)"
        )


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


class _Failed(Exception):
    """A command stops with this message and exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _load(args: argparse.Namespace) -> Config:
    """The config, with rate decks found next to the config file."""
    path = getattr(args, "config", None)
    try:
        with config_folder(Path(path).resolve().parent if path else None):
            return load_config(path)
    except ConfigError as error:
        lines = [f"{error.source}: {len(error.errors)} error(s)"]
        lines += [f"  {line}" for line in error.errors]
        raise _Failed("\n".join(lines), 2) from None


def _database(args: argparse.Namespace, config: Config) -> Path:
    if getattr(args, "data_dir", None):
        return Path(args.data_dir) / "cdr.sqlite3"
    from firmware.app import default_data_dir

    return default_data_dir(config) / "cdr.sqlite3"


def _run(body: Callable[[], int]) -> int:
    try:
        return int(body() or 0)
    except _Failed as failure:
        print(f"minipbx: {failure}" if failure.status != 2 else str(failure), file=sys.stderr)
        return failure.status


def format_amount(amount: Decimal, decimals: int) -> str:
    """The currency's minor unit when that is exact, else all four stored decimals."""
    unit = Decimal(1).scaleb(-decimals)
    return str(amount.quantize(unit)) if amount == amount.quantize(unit) else str(amount)


# ----- tariff ----------------------------------------------------------------------------


def cmd_tariff_check(args: argparse.Namespace) -> int:
    from firmware.accounting.tariff_csv import check_overlaps

    def body() -> int:
        config = _load(args)
        accounting = config.accounting
        errors = list(cross_check_accounting(config))
        notes = 0
        claimed: dict[str, str] = {}
        if not accounting.tariffs:
            print("no tariffs: calls are not rated (add [[accounting.tariffs]])")
        for tariff in accounting.tariffs:
            inline = len(tariff.prefixes)
            deck = len(tariff.rows) - inline
            source = f", {deck} from {tariff.rates_csv}" if tariff.rates_csv else ""
            applies = ", ".join(tariff.applies_to) or "-"
            default = " (default)" if accounting.default_tariff == tariff.name else ""
            print(
                f"tariff {tariff.name}{default}: applies to {applies}; {len(tariff.rows)} prefixes "
                f"({inline} in the config{source}), classes {', '.join(tariff.classes) or '-'}"
            )
            found_errors, found_notes = [], []
            for direction in ("outgoing", "incoming"):  # separate tables: they never overlap
                rows = [
                    row for row in tariff.rows if _direction(tariff, row.dest_class) == direction
                ]
                direction_errors, direction_notes = check_overlaps(rows)
                found_errors += direction_errors
                found_notes += direction_notes
            for name in tariff.applies_to:
                if claimed.setdefault(name, tariff.name) != tariff.name:
                    found_notes.append(
                        f"{name} is priced by tariff {claimed[name]}, listed first (the first wins)"
                    )
            errors += [f"tariff {tariff.name}: {line}" for line in found_errors]
            notes += len(found_notes)
            if not args.quiet:
                for line in found_notes:
                    print(f"  note: {line}")
            used = {row.dest_class for row in tariff.rows} | {"internal", "sibling"}
            for name in tariff.classes:
                if name not in used:
                    notes += 1
                    if not args.quiet:
                        print(f"  note: class {name} has no prefix (no call can reach it)")
        for line in errors:
            print(f"error: {line}")
        print(f"tariff check: {len(errors)} error(s), {notes} note(s)")
        return 1 if errors else 0

    return _run(body)


def _direction(tariff: TariffConfig, dest_class: str) -> str:
    spec = tariff.classes.get(dest_class)
    return spec.direction if spec is not None else "outgoing"


def cmd_tariff_price(args: argparse.Namespace) -> int:
    from firmware.accounting.rating import RatingEngine
    from firmware.accounting.tariffs import money_from_e4

    def body() -> int:
        config = _load(args)
        zone = ZoneInfo(config.site.timezone)
        if args.at:
            try:
                answer = datetime.fromisoformat(args.at).replace(tzinfo=zone)
            except ValueError:
                raise _Failed(f"--at {args.at!r} must be 'YYYY-MM-DD HH:MM'") from None
        else:
            answer = datetime.now(zone)
        if args.seconds < 0:
            raise _Failed("--seconds must not be negative")
        engine = RatingEngine(config)
        stamp = answer.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        row = {
            "call_id": "price", "start_utc": stamp, "answer_utc": stamp, "billable_s": args.seconds,
            "caller_number": "", "called_extension": None, "answered_extension": None,
            "line": args.via, "line_group": args.via,
            "direction": "incoming" if args.incoming else "outgoing",
            "destination_kind": None, "dialled": args.number, "account_code": None,
            "external_number": args.number,
        }  # fmt: skip
        decision = engine.decide(row)
        if decision is None:
            raise _Failed("no tariff applies (no table names it and there is no default_tariff)")
        if decision.destination is None:
            raise _Failed(f"tariff {decision.tariff.name}: no prefix matches {args.number}")
        cost = engine.cost_e4(decision, 1)
        pricing = decision.destination.pricing
        row_source = decision.destination.row.source if decision.destination.row else "-"
        e164 = engine.book.e164(args.number) or "-"
        print(f"number {args.number} (E.164 {e164}): class {decision.destination.dest_class}, "
              f"tariff {decision.tariff.name}, prefix row {row_source}")  # fmt: skip
        print(f"answered {answer:%Y-%m-%d %H:%M} {config.site.timezone}: {decision.band} band, "
              f"{decision.billed_s} s billed ({pricing.first_s}/{pricing.next_s})")  # fmt: skip
        print(f"net {money_from_e4(cost or 0)} {config.accounting.currency}"
              + (" (first call of the month's tiers)" if pricing.tiers else ""))  # fmt: skip
        return 0

    return _run(body)


def cmd_tariff_rerate(args: argparse.Namespace) -> int:
    from firmware.accounting.rating import rerate
    from firmware.accounting.tariffs import money_from_e4

    def body() -> int:
        config = _load(args)
        database = _database(args, config)
        if not database.exists():
            raise _Failed(f"no CDR database at {database}")
        if args.end < args.start:
            raise _Failed(f"--to {args.end} is before --from {args.start}")
        try:
            summary = rerate(database, config, args.start, args.end)
        except FileNotFoundError as error:
            raise _Failed(str(error)) from None
        currency = summary.currency
        difference = summary.new_total_e4 - summary.old_total_e4
        print(
            f"re-rated {summary.start} .. {summary.end} ({config.site.timezone}): "
            f"{summary.calls} calls, {summary.changed} changed"
        )
        print(f"  net total before: {money_from_e4(summary.old_total_e4)} {currency}")
        print(f"  net total after:  {money_from_e4(summary.new_total_e4)} {currency}")
        print(
            f"  difference:       {'+' if difference >= 0 else ''}{money_from_e4(difference)} {currency}"
        )
        if summary.prepaid_adjustments:
            print(
                f"  prepaid: {summary.prepaid_adjustments} ledger adjustment(s), "
                f"{money_from_e4(summary.prepaid_delta_e4)} {currency} credited back"
            )
        if summary.closed_months:
            print(f"  volume tiers final for: {', '.join(summary.closed_months)}")
        return 0

    return _run(body)


# ----- prepaid ---------------------------------------------------------------------------


def cmd_prepaid_list(args: argparse.Namespace) -> int:
    from firmware.accounting.prepaid import list_accounts

    def body() -> int:
        config = _load(args)
        states = list_accounts(_database(args, config), config)
        if not states:
            print("no prepaid accounts (add [[accounting.prepaid]])")
            return 0
        decimals, currency = config.accounting.decimals, config.accounting.currency
        print(f"{'account':<20} {'balance':>14} {'warning at':>12}  state")
        for state in states:
            shown = "BLOCKED" if state.blocked else ("WARNING" if state.warning else "ok")
            if not state.in_config:
                shown += " (not in the config)"
            balance = f"{format_amount(state.balance, decimals)} {currency}"
            warning = format_amount(state.warning_level, decimals)
            print(f"{state.name:<20} {balance:>14} {warning:>12}  {shown}")
        return 0

    return _run(body)


def cmd_prepaid_topup(args: argparse.Namespace) -> int:
    from firmware.accounting.prepaid import PrepaidError, topup

    def body() -> int:
        config = _load(args)
        try:
            amount = Decimal(args.amount.strip().replace(",", "."))
        except InvalidOperation:
            raise _Failed(f"amount {args.amount!r} is not a number (e.g. 20 or 12.50)") from None
        database = _database(args, config)
        database.parent.mkdir(parents=True, exist_ok=True)
        try:
            balance = topup(database, config, args.name, amount, args.note)
        except PrepaidError as error:
            raise _Failed(str(error)) from None
        currency = config.accounting.currency
        print(f"{args.name}: {'+' if amount > 0 else ''}{amount} {currency}, "
              f"balance {format_amount(balance, config.accounting.decimals)} {currency}")  # fmt: skip
        return 0

    return _run(body)


def cmd_prepaid_ledger(args: argparse.Namespace) -> int:
    from firmware.accounting.prepaid import ledger

    def body() -> int:
        config = _load(args)
        entries = ledger(_database(args, config), args.name, args.last)
        if not entries:
            print(f"{args.name}: no ledger entries")
            return 0
        print(f"{'time (UTC)':<24} {'change':>11} {'balance':>11}  reason")
        for entry in entries:
            why = entry.reason + (f" {entry.call_id}" if entry.call_id else "")
            why += f" ({entry.note})" if entry.note else ""
            print(f"{entry.time_utc:<24} {entry.delta:>11} {entry.balance:>11}  {why}")
        return 0

    return _run(body)
