"""Report settings: departments, CSV dialect, top-numbers length, PDF font; see docs/reports.md."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from firmware.config.fields import ExtensionNumber, Name, Section

DECIMAL_COMMA_COUNTRIES = frozenset({"pt", "de", "fr", "es", "it", "ru", "cz"})
"""Site countries whose spreadsheets expect `;` between fields and a decimal comma."""


class ReportsConfig(Section):
    """How reports group extensions and how exports are written.

    `departments` name groups of extensions for the department report and the
    `--department` filter; an extension belongs to at most one department, so the
    department rows add up to the period's total. `csv_dialect = "auto"` picks the
    semicolon dialect (decimal comma, UTF-8 with BOM) for the countries in
    DECIMAL_COMMA_COUNTRIES and the comma dialect elsewhere. `pdf_font` is a TrueType file
    with the scripts the names need; empty: DejaVu Sans when installed, otherwise the PDF's
    built-in font with names transliterated to Latin letters.
    """

    departments: dict[Name, tuple[ExtensionNumber, ...]] = Field(default_factory=dict)
    csv_dialect: Literal["auto", "comma", "semicolon"] = "auto"
    top_numbers: int = Field(default=20, ge=1, le=10_000)
    pdf_font: str = ""

    @model_validator(mode="after")
    def _one_department_per_extension(self) -> ReportsConfig:
        seen: dict[str, str] = {}
        for department, members in self.departments.items():
            if not members:
                raise ValueError(f"departments.{department}: list at least one extension")
            for number in members:
                if number in seen:
                    raise ValueError(
                        f"departments: extension {number} is in both {seen[number]!r} and "
                        f"{department!r}; an extension belongs to one department"
                    )
                seen[number] = department
        return self

    def dialect_for(self, country: str) -> Literal["comma", "semicolon"]:
        """The CSV dialect to use when none is asked for."""
        if self.csv_dialect != "auto":
            return self.csv_dialect
        return "semicolon" if country.strip().lower() in DECIMAL_COMMA_COUNTRIES else "comma"
