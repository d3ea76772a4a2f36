"""Prices each call record in the CDR writer thread; re-rates a period after tariff changes.

The rater (:func:`make_rater`) runs inside the transaction that inserts the record: it
classifies the call, counts the month's earlier calls of a tiered class with SQL on the
writer's connection, prices it, and draws a prepaid balance, so the record and the draw-down
commit together. :func:`rerate` recomputes the rating columns of a period from another
process, in short batches next to a running writer (WAL, busy timeout).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from firmware.accounting.prepaid import (
    draw,
    draw_amount_e4,
    ensure_tables,
    prepaid_account_for,
    utc_stamp,
)
from firmware.accounting.tariffs import (
    FREE,
    Band,
    Destination,
    Tariff,
    TariffBook,
    billed_seconds,
    call_price,
    tier_price,
    to_e4,
)
from firmware.calls.cdr import Rater
from firmware.config.schema import Config

__all__ = ["RatingEngine", "RerateSummary", "make_rater", "rerate", "setup_rating"]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0
RERATE_BATCH = 5000
"""Rows updated per transaction by a re-rating: short enough that the writer never waits long."""
UNCLASSIFIED = "unclassified"
"""dest_class of an outgoing number no prefix of its tariff matches (cost left NULL)."""

_SETUP = (
    "CREATE INDEX IF NOT EXISTS cdr_rating_tier ON cdr (tariff, dest_class, start_utc)",
    # Calls counted so far per month and tier party: one row read and written per tiered
    # record instead of a count over the month. Derived data: a missing row is recounted
    # from the cdr table, and a re-rating drops the rows of the months it recomputed.
    """CREATE TABLE IF NOT EXISTS rating_tier_count (
        month      TEXT NOT NULL,
        tariff     TEXT NOT NULL,
        dest_class TEXT NOT NULL,
        party      TEXT NOT NULL,
        calls      INTEGER NOT NULL,
        PRIMARY KEY (month, tariff, dest_class, party)
    ) WITHOUT ROWID""",
)


def setup_rating(connection: sqlite3.Connection) -> None:
    """The rating index, the tier counters and the prepaid tables, if missing (idempotent)."""
    for statement in _SETUP:
        connection.execute(statement)
    ensure_tables(connection)


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(slots=True)
class Decision:
    """Everything about a call's price except its place in the month (tiers)."""

    tariff: Tariff
    destination: Destination | None
    answered: bool
    billed_s: int
    band: Band
    party: str
    account_code: str | None
    extension: str | None

    @property
    def tiered(self) -> bool:
        return (
            self.answered and self.destination is not None and bool(self.destination.pricing.tiers)
        )


class RatingEngine:
    """The pricing of one config: call rows in, rating columns out (no I/O here)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.accounting = config.accounting
        self.book = TariffBook(config.accounting, config.site.timezone)
        self.did_accounts = dict(config.accounting.did_accounts)
        self._destinations: dict[tuple[str, str, str], Destination | None] = {}
        self._bands: dict[tuple[str, str], Band] = {}
        self._months: list[tuple[str, str, str]] = []
        self._prices: dict[tuple[int, int, str, Decimal | None], int] = {}
        self.party_sql = _party_sql(self.did_accounts)
        self.count_sql = (
            "SELECT COUNT(*) FROM cdr WHERE tariff = ? AND dest_class = ? AND start_utc >= ?"
            " AND start_utc < ? AND answer_utc IS NOT NULL AND cost_e4 IS NOT NULL"
            f" AND ({self.party_sql}) = ?"
        )

    @property
    def active(self) -> bool:
        return bool(self.book.tariffs)

    # -- classification ------------------------------------------------------------------

    def decide(self, row: dict[str, Any]) -> Decision | None:
        """Which tariff and class price this call, its billed time and band; None: not rated."""
        line = row.get("line") or ""
        sibling = line[len("sibling:") :] if line.startswith("sibling:") else None
        tariff = self.book.tariff_for(row.get("line_group"), line, sibling)
        if tariff is None:
            return None
        direction = row["direction"]
        incoming = direction == "incoming"
        kind = row.get("destination_kind")
        number = row.get("external_number")
        if number is None:
            number = self._number_from_dialled(row)
        if kind == "sibling" or (sibling is not None and kind != "sibling_fallback"):
            destination = self._fixed(tariff, "sibling", incoming)
        elif direction == "internal":
            destination = self._fixed(tariff, "internal", incoming)
        else:
            destination = self._destination(tariff, number, "incoming" if incoming else "outgoing")
            if destination is None and incoming:
                return None  # incoming calls are rated only when an incoming class matches
        account_code = row.get("account_code")
        if account_code is None and incoming:
            account_code = self.did_accounts.get(number)
        extension = (
            (row.get("answered_extension") or row.get("called_extension"))
            if incoming
            else row.get("caller_number")
        )
        party = f"code:{account_code}" if account_code is not None else f"ext:{extension or ''}"
        answer = row.get("answer_utc")
        if answer is None or destination is None:
            return Decision(
                tariff, destination, answer is not None, 0, "peak", party, account_code, extension
            )
        pricing = destination.pricing
        billed = billed_seconds(
            round(float(row["billable_s"]) * 1000), pricing.first_s, pricing.next_s
        )
        return Decision(
            tariff,
            destination,
            True,
            billed,
            self._band(tariff, answer),
            party,
            account_code,
            extension,
        )

    def _number_from_dialled(self, row: dict[str, Any]) -> str:
        """Records without external_number (schema v2): the dialled digits minus the access code."""
        dialled = row.get("dialled") or ""
        group = (
            self.config.line_group(row.get("line_group") or "") if row.get("line_group") else None
        )
        if (
            row.get("direction") == "outgoing"
            and group is not None
            and dialled.startswith(group.access_code)
        ):
            return dialled[len(group.access_code) :]
        return dialled

    def _fixed(self, tariff: Tariff, dest_class: str, incoming: bool) -> Destination:
        destination = tariff.fixed_class(dest_class)
        if (destination.pricing.direction == "incoming") != incoming:
            return Destination(dest_class, FREE)
        return destination

    def _destination(self, tariff: Tariff, number: str, direction: str) -> Destination | None:
        key = (tariff.name, direction, number)
        try:
            return self._destinations[key]
        except KeyError:
            if len(self._destinations) > 100_000:
                self._destinations.clear()
            found = self._destinations[key] = self.book.classify(tariff, number, direction)
            return found

    def _band(self, tariff: Tariff, answer_utc: str) -> Band:
        """Bands change on whole local minutes, so one lookup per (tariff, UTC minute)."""
        key = (tariff.name, answer_utc[:16])
        band = self._bands.get(key)
        if band is None:
            if len(self._bands) > 200_000:
                self._bands.clear()
            band = self._bands[key] = self.book.band(tariff, _parse_utc(answer_utc))
        return band

    # -- months and prices -----------------------------------------------------------------

    def month_of(self, start_utc: str) -> tuple[str, str, str]:
        """(YYYY-MM local, first instant UTC, next month's first instant UTC) of a start time."""
        for month in self._months:  # a handful of months: compare the stored text
            if month[1] <= start_utc < month[2]:
                return month
        local = _parse_utc(start_utc).astimezone(self.book.zone)
        found = self.month_bounds(local.year, local.month)
        self._months = [found, *self._months[:11]]
        return found

    def month_bounds(self, year: int, month: int) -> tuple[str, str, str]:
        first = datetime.combine(date(year, month, 1), time(), self.book.zone)
        following = date(year + month // 12, month % 12 + 1, 1)
        after = datetime.combine(following, time(), self.book.zone)
        return f"{year:04d}-{month:02d}", utc_stamp(first), utc_stamp(after)

    def cost_e4(self, decision: Decision, call_number: int | None) -> int | None:
        """The call's net cost in e4; None when its class is unknown (not rated)."""
        if decision.destination is None:
            return None
        if not decision.answered:
            return 0
        pricing = decision.destination.pricing
        per_call = tier_price(pricing.tiers, call_number) if pricing.tiers and call_number else None
        key = (id(pricing), decision.billed_s, decision.band, per_call)
        cost = self._prices.get(key)
        if (
            cost is None
        ):  # the same few prices recur: cached per engine (its Pricing objects live on)
            if len(self._prices) > 100_000:
                self._prices.clear()
            cost = self._prices[key] = to_e4(
                call_price(pricing, decision.billed_s, decision.band, per_call)
            )
        return cost

    def columns(
        self, decision: Decision | None, cost_e4: int | None, prepaid: str | None, stamp: str
    ) -> dict[str, Any]:
        if decision is None:
            return dict.fromkeys(
                ("dest_class", "tariff", "cost_e4", "currency", "prepaid_account", "rated_utc")
            )
        destination = decision.destination
        return {
            "dest_class": destination.dest_class if destination is not None else UNCLASSIFIED,
            "tariff": decision.tariff.name,
            "cost_e4": cost_e4,
            "currency": self.accounting.currency,
            "prepaid_account": prepaid,
            "rated_utc": stamp,
        }


def _party_sql(did_accounts: dict[str, str]) -> str:
    """SQL for the party a call's tiers count for: its account code, else its extension.

    Mirrors :meth:`RatingEngine.decide`; DIDs and codes are validated digits, safe inline.
    """
    did_case = ""
    if did_accounts:
        whens = " ".join(f"WHEN '{did}' THEN '{code}'" for did, code in did_accounts.items())
        mapped = f"CASE COALESCE(external_number, dialled) {whens} END"
        did_case = f"WHEN direction = 'incoming' AND {mapped} IS NOT NULL THEN 'code:' || {mapped} "
    return (
        "CASE WHEN account_code IS NOT NULL THEN 'code:' || account_code "
        + did_case
        + "WHEN direction = 'incoming' THEN 'ext:' || COALESCE(answered_extension, called_extension, '')"
        " ELSE 'ext:' || COALESCE(caller_number, '') END"
    )


# ---------------------------------------------------------------------------
# The rater in the CDR writer thread


class _Rater:
    """Callable the CdrStore calls per record; keeps the engine of the config in force."""

    def __init__(self, current_config: Callable[[], Config], clock: Callable[[], datetime]) -> None:
        self.current_config = current_config
        self.clock = clock
        self._engine: RatingEngine | None = None
        self._ready: set[tuple[int, int]] = set()

    def engine(self) -> RatingEngine:
        config = self.current_config()
        if self._engine is None or self._engine.config is not config:
            self._engine = RatingEngine(config)
        return self._engine

    def _setup(self, connection: sqlite3.Connection) -> None:
        """Once per connection and schema: a rolled-back first transaction undoes the DDL."""
        version = connection.execute("PRAGMA schema_version").fetchone()[0]
        if (id(connection), version) in self._ready:
            return
        setup_rating(connection)
        version = connection.execute("PRAGMA schema_version").fetchone()[0]
        self._ready.add((id(connection), version))

    def _call_number(
        self,
        connection: sqlite3.Connection,
        engine: RatingEngine,
        decision: Decision,
        start_utc: str,
    ) -> int:
        """This call's number in its month and tier party, counted in the same transaction."""
        assert decision.destination is not None
        month, first, after = engine.month_of(start_utc)
        key = (month, decision.tariff.name, decision.destination.dest_class, decision.party)
        found = connection.execute(
            "SELECT calls FROM rating_tier_count WHERE month = ? AND tariff = ? AND dest_class = ?"
            " AND party = ?",
            key,
        ).fetchone()
        if found is not None:
            number = found[0] + 1
            connection.execute(
                "UPDATE rating_tier_count SET calls = ? WHERE month = ? AND tariff = ?"
                " AND dest_class = ? AND party = ?",
                (number, *key),
            )
            return number
        (earlier,) = connection.execute(
            engine.count_sql, (key[1], key[2], first, after, key[3])
        ).fetchone()
        connection.execute(
            "INSERT INTO rating_tier_count VALUES (?, ?, ?, ?, ?)", (*key, earlier + 1)
        )
        return earlier + 1

    def __call__(
        self, connection: sqlite3.Connection, row: dict[str, Any]
    ) -> dict[str, Any] | None:
        engine = self.engine()
        if not engine.active:
            return None
        decision = engine.decide(row)
        if decision is None:
            return None
        self._setup(connection)
        call_number = None
        if decision.tiered:
            call_number = self._call_number(connection, engine, decision, row["start_utc"])
        cost = engine.cost_e4(decision, call_number)
        now = self.clock()
        prepaid = None
        if cost:
            account = prepaid_account_for(engine.config, decision.extension, decision.account_code)
            if account is not None:
                amount = draw_amount_e4(cost, account, engine.accounting.vat_percent)
                draw(connection, account, -amount, call_id=row["call_id"], reason="call", now=now)
                prepaid = account.name
        return engine.columns(decision, cost, prepaid, utc_stamp(now))


def make_rater(
    current_config: Callable[[], Config], clock: Callable[[], datetime] | None = None
) -> Rater | None:
    """The CDR store's rater for the config in force (read at each record: reloads apply)."""
    return _Rater(current_config, clock or (lambda: datetime.now(UTC)))


# ---------------------------------------------------------------------------
# Re-rating


@dataclass
class RerateSummary:
    """What a re-rating did; totals are net cost_e4 sums over the period's calls."""

    start: date
    end: date
    calls: int = 0
    changed: int = 0
    old_total_e4: int = 0
    new_total_e4: int = 0
    currency: str = ""
    prepaid_adjustments: int = 0
    prepaid_delta_e4: int = 0
    closed_months: list[str] = field(default_factory=list)


_LOAD_COLUMNS = (
    "id", "call_id", "start_utc", "answer_utc", "billable_s", "caller_number",
    "called_extension", "answered_extension", "line", "line_group", "direction",
    "destination_kind", "dialled", "account_code", "external_number",
    "dest_class", "tariff", "cost_e4", "currency", "prepaid_account",
)  # fmt: skip
_RATING = ("dest_class", "tariff", "cost_e4", "currency", "prepaid_account")


def _local_midnight_utc(engine: RatingEngine, day: date) -> str:
    return utc_stamp(datetime.combine(day, time(), engine.book.zone))


def rerate(
    db_path: str | os.PathLike[str],
    config: Config,
    start: date,
    end: date,
    *,
    now: datetime | None = None,
    batch_size: int = RERATE_BATCH,
) -> RerateSummary:
    """Recompute the rating of calls that started from `start` to `end` (local dates, inclusive).

    Tier counts always cover whole months (local time) with the current tariffs; volume
    tiers take the month's final total for months already over at `now`, the count so far
    (as the writer did) otherwise. Rows whose rating changes are rewritten with a new
    rated_utc, and prepaid balances are corrected by the difference with a ledger entry.
    """
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    now = now or datetime.now(UTC)
    engine = RatingEngine(config)
    summary = RerateSummary(start, end, currency=config.accounting.currency)
    period_first = _local_midnight_utc(engine, start)
    period_after = _local_midnight_utc(engine, end + timedelta(days=1))
    _, months_first, _ = engine.month_bounds(start.year, start.month)
    _, _, months_after = engine.month_bounds(end.year, end.month)
    connection = sqlite3.connect(os.fspath(db_path), isolation_level=None, timeout=BUSY_TIMEOUT_S)
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        # No fsync per batch (WAL stays consistent; a power cut loses at most the last
        # batches, rows and ledger together, and the re-rating can simply be run again).
        connection.execute("PRAGMA synchronous = NORMAL")
        _ensure_cdr_table(connection)
        connection.execute("BEGIN IMMEDIATE")
        setup_rating(connection)
        connection.execute("COMMIT")
        rows = [
            dict(zip(_LOAD_COLUMNS, values, strict=True))
            for values in connection.execute(
                f"SELECT {', '.join(_LOAD_COLUMNS)} FROM cdr WHERE start_utc >= ? AND start_utc < ?"
                " ORDER BY id",
                (months_first, months_after),
            )
        ]
        in_period = [period_first <= row["start_utc"] < period_after for row in rows]
        decisions = [engine.decide(row) if engine.active else None for row in rows]
        call_numbers = _tier_numbers(engine, rows, decisions, now, summary)
        drawn = _drawn(connection, period_first, period_after)
        stamp = utc_stamp(now)
        pending: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for row, decision, number, inside in zip(
            rows, decisions, call_numbers, in_period, strict=True
        ):
            if not inside:
                continue
            summary.calls += 1
            cost = engine.cost_e4(decision, number) if decision is not None else None
            account = None
            if cost and decision is not None:
                account = prepaid_account_for(config, decision.extension, decision.account_code)
            new = engine.columns(decision, cost, account.name if account else None, stamp)
            summary.old_total_e4 += row["cost_e4"] or 0
            summary.new_total_e4 += cost or 0
            changed = (
                row["cost_e4"] != new["cost_e4"]
                or row["dest_class"] != new["dest_class"]
                or row["tariff"] != new["tariff"]
                or row["currency"] != new["currency"]
                or row["prepaid_account"] != new["prepaid_account"]
            )
            summary.changed += changed
            if changed or drawn.get(row["call_id"]) or account is not None:
                pending.append((row, new if changed else {}))
            if len(pending) >= batch_size:
                _write_batch(connection, engine, pending, drawn, summary, now)
                pending = []
        if pending:
            _write_batch(connection, engine, pending, drawn, summary, now)
        first_month = engine.month_bounds(start.year, start.month)[0]
        last_month = engine.month_bounds(end.year, end.month)[0]
        connection.execute(  # the writer recounts these months' tiers from the rows
            "DELETE FROM rating_tier_count WHERE month >= ? AND month <= ?",
            (first_month, last_month),
        )
    finally:
        connection.close()
    log.info(
        "event=rerate from=%s to=%s calls=%d changed=%d old_total_e4=%d new_total_e4=%d",
        start, end, summary.calls, summary.changed, summary.old_total_e4, summary.new_total_e4,
    )  # fmt: skip
    return summary


def _ensure_cdr_table(connection: sqlite3.Connection) -> None:
    found = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cdr'"
    ).fetchone()
    if found is None:
        raise FileNotFoundError("no cdr table in this database: is it the appliance's cdr.sqlite3?")


def _tier_numbers(
    engine: RatingEngine,
    rows: list[dict[str, Any]],
    decisions: list[Decision | None],
    now: datetime,
    summary: RerateSummary,
) -> list[int | None]:
    """Each tiered call's number in its month (insertion order, as the writer counted)."""
    counts: dict[tuple[str, str, str, str], int] = {}
    keys: list[tuple[str, str, str, str] | None] = []
    numbers: list[int | None] = []
    closed: dict[str, bool] = {}
    now_stamp = utc_stamp(now)
    for row, decision in zip(rows, decisions, strict=True):
        if decision is None or not decision.tiered:
            keys.append(None)
            numbers.append(None)
            continue
        assert decision.destination is not None
        month, _, after = engine.month_of(row["start_utc"])
        closed.setdefault(month, after <= now_stamp)
        key = (month, decision.tariff.name, decision.destination.dest_class, decision.party)
        counts[key] = counts.get(key, 0) + 1
        keys.append(key)
        numbers.append(counts[key])
    for index, (key, decision) in enumerate(zip(keys, decisions, strict=True)):
        if (
            key is not None
            and decision is not None
            and decision.destination is not None
            and decision.destination.pricing.tier_mode == "volume"
            and closed[key[0]]
        ):
            numbers[index] = counts[key]
    summary.closed_months = sorted(month for month, done in closed.items() if done)
    return numbers


def _drawn(connection: sqlite3.Connection, first: str, after: str) -> dict[str, dict[str, int]]:
    """What each call of the period has drawn so far from each prepaid account (the ledger).

    Driven from the ledger (CROSS JOIN fixes the order in SQLite): it holds only prepaid
    calls, far fewer than the period's records.
    """
    drawn: dict[str, dict[str, int]] = {}
    for call_id, account, total in connection.execute(
        "SELECT ledger.call_id, ledger.account, -SUM(ledger.delta_e4) FROM prepaid_ledger AS ledger"
        " CROSS JOIN cdr ON cdr.call_id = ledger.call_id"
        " WHERE ledger.call_id IS NOT NULL AND cdr.start_utc >= ? AND cdr.start_utc < ?"
        " GROUP BY ledger.call_id, ledger.account",
        (first, after),
    ):
        if total:
            drawn.setdefault(call_id, {})[account] = total
    return drawn


def _write_batch(
    connection: sqlite3.Connection,
    engine: RatingEngine,
    pending: list[tuple[dict[str, Any], dict[str, Any]]],
    drawn: dict[str, dict[str, int]],
    summary: RerateSummary,
    now: datetime,
) -> None:
    """One short transaction: the changed rows and their prepaid corrections."""
    accounts = {account.name: account for account in engine.accounting.prepaid}
    connection.execute("BEGIN IMMEDIATE")
    try:
        updates = [
            (*(new[name] for name in (*_RATING, "rated_utc")), row["id"])
            for row, new in pending
            if new
        ]
        connection.executemany(
            "UPDATE cdr SET dest_class = ?, tariff = ?, cost_e4 = ?, currency = ?,"
            " prepaid_account = ?, rated_utc = ? WHERE id = ?",
            updates,
        )
        for row, new in pending:
            current = new or {name: row[name] for name in _RATING}
            target: dict[str, int] = {}
            name = current["prepaid_account"]
            if name is not None and current["cost_e4"] and name in accounts:
                target[name] = draw_amount_e4(
                    current["cost_e4"], accounts[name], engine.accounting.vat_percent
                )
            before = drawn.get(row["call_id"], {})
            for account_name in sorted(set(before) | set(target)):
                refund = before.get(account_name, 0) - target.get(account_name, 0)
                if not refund:
                    continue
                account = accounts.get(account_name)
                if account is None:
                    log.warning(
                        "event=rerate_prepaid_skipped account=%s call_id=%s delta_e4=%d reason=not_configured",
                        account_name, row["call_id"], refund,
                    )  # fmt: skip
                    continue
                draw(connection, account, refund, call_id=row["call_id"], reason="rerate", now=now)
                summary.prepaid_adjustments += 1
                summary.prepaid_delta_e4 += refund
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
