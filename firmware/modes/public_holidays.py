"""Public holidays from the `holidays` package, one year at a time, and config checks.

The package computes a year on first use (imports its country module: disk I/O), so a
calendar is built and warmed off the event loop; later years are pure computation.
"""

from __future__ import annotations

import functools
from datetime import date
from typing import Any

EXAMPLE_COUNTRIES = "'PT', 'ES', 'FR', 'DE', 'GB' or 'US'"


@functools.cache
def _supported_countries() -> dict[str, list[str]]:
    import holidays

    return holidays.list_supported_countries()


def _calendar_class(country: str) -> Any:
    import holidays

    return holidays.country_holidays(country)


def check_country(country: str, subdivision: str, categories: tuple[str, ...]) -> list[str]:
    """Problems with a holiday country/subdivision/categories, as config error texts."""
    supported = _supported_countries()
    if country not in supported:
        return [
            f"country: {country!r} is not a country the holidays package knows; use an "
            f"ISO 3166-1 alpha-2 code such as {EXAMPLE_COUNTRIES}"
        ]
    calendar = _calendar_class(country)
    problems: list[str] = []
    if subdivision and _subdivision_code(calendar, subdivision) is None:
        choices = _describe_subdivisions(calendar)
        problems.append(
            f"subdivision: {subdivision!r} is not a subdivision of {country}; "
            + (f"use one of {choices}" if choices else f"{country} has none, leave it empty")
        )
    known = tuple(sorted(getattr(calendar, "supported_categories", ("public",))))
    for category in categories:
        if category not in known:
            problems.append(
                f"holiday_categories: {category!r} is not a category of {country}; "
                f"use {', '.join(known)}"
            )
    return problems


def _subdivision_code(calendar: Any, subdivision: str) -> str | None:
    """The subdivision's code, accepting its code or its name (e.g. '11' or 'Lisboa')."""
    codes = tuple(getattr(calendar, "subdivisions", ()))
    if subdivision in codes:
        return subdivision
    for code in codes:
        if code.lower() == subdivision.lower():
            return code
    aliases = getattr(calendar, "subdivisions_aliases", {}) or {}
    for alias, code in aliases.items():
        if alias.lower() == subdivision.lower():
            return str(code)
    return None


def _describe_subdivisions(calendar: Any) -> str:
    names: dict[str, str] = {}
    for alias, code in (getattr(calendar, "subdivisions_aliases", {}) or {}).items():
        names.setdefault(str(code), alias)
    codes = tuple(getattr(calendar, "subdivisions", ()))
    return ", ".join(f"{code} ({names[code]})" if code in names else code for code in codes)


class HolidayCalendar:
    """Which public holiday (if any) falls on a local date; empty country: none ever.

    Years are computed once and kept as plain dicts, so lookups are dictionary reads.
    """

    def __init__(self, country: str, subdivision: str, categories: tuple[str, ...]) -> None:
        self.country = country
        self.categories = categories
        self.subdivision: str | None = None
        if country and subdivision:
            self.subdivision = _subdivision_code(_calendar_class(country), subdivision)
        self._years: dict[int, dict[date, str]] = {}

    def warm(self, *years: int) -> None:
        """Compute these years now (call it off the event loop)."""
        if not self.country:
            return
        for year in years:
            self._year(year)

    def name_on(self, day: date) -> str | None:
        if not self.country:
            return None
        return self._year(day.year).get(day)

    def between(self, first: date, last: date) -> list[tuple[date, str]]:
        """Holidays from `first` to `last` inclusive, in date order."""
        if not self.country:
            return []
        found: list[tuple[date, str]] = []
        for year in range(first.year, last.year + 1):
            found += [(d, n) for d, n in self._year(year).items() if first <= d <= last]
        return sorted(found)

    def _year(self, year: int) -> dict[date, str]:
        days = self._years.get(year)
        if days is None:
            import holidays

            calendar = holidays.country_holidays(
                self.country, subdiv=self.subdivision, years=year, categories=self.categories
            )
            days = self._years[year] = dict(calendar.items())
        return days
