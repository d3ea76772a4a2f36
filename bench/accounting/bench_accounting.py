"""Call-accounting figures on a generated year of CDRs (prints them; not pass/fail).

    .venv/bin/python bench/accounting/bench_accounting.py [--folder bench/out/accounting]
        [--calls 1000000] [--export-calls 100000] [--month 2025-10] [--json]

Builds (once, kept in the folder) a 1,000,000-call year and a 100,000-call year with
generate_cdrs.py, then measures:

* monthly per-extension cost report (`reports.run_report(..., "extension", ...)`, rows
  read to the end, in this process), goal < 1 s;
* full-year XLSX export of 100,000 detail rows (`minipbx report calls --format xlsx` in a
  child process: wall time and the child's peak RSS from os.wait4), goals < 15 s and
  < 200 MB;
* re-rating a month (`rating.rerate`), unchanged tariffs and after a price change of the
  mobile class (every answered mobile call rewritten), goal < 5 s;
* archive + prune of a month (`retention.archive_and_prune` on a copy of the big
  database) while a CdrStore writes a record every 50 ms, as the core would: the longest
  that writer waited for a commit is reported next to the archive's own time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate_cdrs
from office import office_config, office_config_text

from firmware.accounting.rating import rerate
from firmware.accounting.reports import Filters, ReportSettings, run_report
from firmware.accounting.retention import archive_and_prune
from firmware.accounting.schedule_times import local_midnight_utc
from firmware.calls.cdr import CallRecord, CdrStore, open_readonly
from firmware.config.load import parse_config

ROOT = Path(__file__).resolve().parents[2]
YEAR_START = date(2025, 1, 1)


def machine() -> str:
    sys.path.insert(0, str(ROOT / "bench"))
    from common import machine_info

    info = machine_info()
    return (
        f"{info['cpus']} CPUs ({info['cpu_model']}), {info['memory']} RAM, Python "
        f"{info['python']}, load average {info['loadavg']}"
    )


def ensure_database(folder: Path, name: str, calls: int) -> Path:
    path = folder / name / "cdr.sqlite3"
    if not path.exists():
        began = time.perf_counter()
        generate_cdrs.write(path, calls, 1, YEAR_START, 365)
        written = time.perf_counter() - began
        began = time.perf_counter()
        generate_cdrs.rate(path, YEAR_START, 365)
        print(
            f"  generated {calls} calls in {written:.1f} s, rated in "
            f"{time.perf_counter() - began:.1f} s -> {path}",
            flush=True,
        )
        (path.parent / "office.toml").write_text(office_config_text(), encoding="utf-8")
    return path


def month_bounds(month: str) -> tuple[date, date]:
    first = date.fromisoformat(f"{month}-01")
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return first, following - timedelta(days=1)


def bench_monthly_report(database: Path, month: str, repeats: int = 5) -> dict[str, Any]:
    config = office_config()
    settings = ReportSettings.from_config(config)
    first, last = month_bounds(month)
    times, rows = [], 0
    for _ in range(repeats):
        began = time.perf_counter()
        connection = open_readonly(database)
        try:
            report = run_report(connection, "extension", Filters(start=first, end=last), settings)
            rows = sum(1 for _ in report.rows)
        finally:
            connection.close()
        times.append(time.perf_counter() - began)
    return {
        "rows": rows,
        "calls": report.calls,
        "best_s": min(times),
        "median_s": statistics.median(times),
        "goal_s": 1.0,
    }


def bench_xlsx_export(database: Path, out: Path) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "firmware.cli", "report", "calls",
        "--from", f"{YEAR_START}", "--to", f"{YEAR_START.replace(month=12, day=31)}",
        "--format", "xlsx", "--out", str(out), "--database", str(database),
        "--config", str(database.parent / "office.toml"),
    ]  # fmt: skip
    # A small fresh Python starts the export and reports its child's usage: measured from
    # here, the child's peak RSS would include this big process's pages copied at fork.
    wrapper = (
        "import json, resource, subprocess, sys, time; began = time.perf_counter(); "
        "done = subprocess.run(sys.argv[1:], stderr=subprocess.PIPE, text=True); "
        "usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(json.dumps([done.returncode, done.stderr.strip(), time.perf_counter() - began, "
        "usage.ru_utime + usage.ru_stime, usage.ru_maxrss]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *command], cwd=ROOT, capture_output=True, text=True
    )
    code, message, wall, cpu, max_rss_kib = json.loads(done.stdout)
    return {
        "exit": code,
        "message": message,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mib": max_rss_kib / 1024,
        "file_mib": out.stat().st_size / 2**20 if out.exists() else 0.0,
        "goal_s": 15.0,
        "goal_rss_mib": 200 / 1.048576,
    }


def bench_rerate(database: Path, month: str) -> dict[str, Any]:
    first, last = month_bounds(month)
    results: dict[str, Any] = {}
    config = office_config()
    began = time.perf_counter()
    summary = rerate(database, config, first, last)
    results["unchanged_s"] = time.perf_counter() - began
    results["calls"], results["unchanged_rows_changed"] = summary.calls, summary.changed
    dearer = parse_config(
        office_config_text().replace('per_minute = "0.10"', 'per_minute = "0.11"'), "<dearer>"
    )
    began = time.perf_counter()
    summary = rerate(database, dearer, first, last)
    results["changed_s"] = time.perf_counter() - began
    results["changed_rows"] = summary.changed
    rerate(database, config, first, last)  # back to the generated prices
    results["goal_s"] = 5.0
    return results


def _core_like_writer(path: Path, stop: threading.Event, waits: list[float]) -> None:
    store = CdrStore(path)
    try:
        while not stop.is_set():
            now = datetime.now(UTC)
            record = CallRecord(
                start=now - timedelta(seconds=60), answer=now - timedelta(seconds=50), end=now,
                caller_number="201", caller_name="Reception", dialled="202",
                called_extension="202", answered_extension="202", line=None, line_group=None,
                direction="internal", disposition="answered", hangup_side="caller",
            )  # fmt: skip
            began = time.perf_counter()
            store.write_blocking(record)
            waits.append(time.perf_counter() - began)
            stop.wait(0.05)
    finally:
        store.close()


def bench_archive(database: Path, folder: Path, month: str) -> dict[str, Any]:
    copy = folder / "archive-bench" / "cdr.sqlite3"
    shutil.rmtree(copy.parent, ignore_errors=True)
    copy.parent.mkdir(parents=True)
    shutil.copyfile(database, copy)
    first, last = month_bounds(month)
    zone = office_config().site.timezone
    cutoff = local_midnight_utc(last + timedelta(days=1), zone)
    # Archive everything before the month first (not timed), so the timed run is one month.
    archive_and_prune(copy, local_midnight_utc(first, zone), copy.parent / "a0")
    idle: list[float] = []
    stop = threading.Event()
    writer = threading.Thread(target=_core_like_writer, args=(copy, stop, idle))
    writer.start()
    time.sleep(1.0)
    stop.set()
    writer.join()
    waits: list[float] = []
    stop = threading.Event()
    writer = threading.Thread(target=_core_like_writer, args=(copy, stop, waits))
    writer.start()
    try:
        result = archive_and_prune(copy, cutoff, copy.parent / "archive")
    finally:
        stop.set()
        writer.join()
    figures = {
        "rows": result.rows,
        "seconds": result.seconds,
        **{name: value for name, value in result.steps.items()},
        "file_mib": result.file_bytes / 2**20,
        "database_mib_before": result.database_bytes_before / 2**20,
        "database_mib_after": result.database_bytes_after / 2**20,
        "free_pages": result.free_pages,
        "writer_commits_during": len(waits),
        "writer_wait_max_ms": max(waits) * 1e3 if waits else None,
        "writer_wait_p50_ms": statistics.median(waits) * 1e3 if waits else None,
        "writer_wait_idle_max_ms": max(idle) * 1e3 if idle else None,
    }
    shutil.rmtree(copy.parent, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "bench" / "out" / "accounting")
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--export-calls", type=int, default=100_000)
    parser.add_argument("--month", default="2025-10")
    parser.add_argument("--skip", default="", help="comma-separated: report,xlsx,rerate,archive")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    print(f"machine: {machine()}", flush=True)
    big = ensure_database(args.folder, f"year-{args.calls}", args.calls)
    small = ensure_database(args.folder, f"year-{args.export_calls}", args.export_calls)
    figures: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds")}
    if "report" not in skip:
        figures["monthly_report"] = report = bench_monthly_report(big, args.month)
        print(
            f"monthly per-extension cost report ({args.month}, {report['calls']} calls, "
            f"{report['rows']} rows): best {report['best_s']:.3f} s, median "
            f"{report['median_s']:.3f} s (goal < 1 s)",
            flush=True,
        )
    if "xlsx" not in skip:
        out = args.folder / "year-calls.xlsx"
        figures["xlsx_export"] = export = bench_xlsx_export(small, out)
        print(
            f"full-year XLSX export ({export['message'] or 'exit ' + str(export['exit'])}): "
            f"{export['wall_s']:.1f} s wall, {export['cpu_s']:.1f} s CPU, peak RSS "
            f"{export['peak_rss_mib']:.0f} MiB, file {export['file_mib']:.1f} MiB "
            "(goals < 15 s, < 200 MB)",
            flush=True,
        )
    if "rerate" not in skip:
        figures["rerate"] = rated = bench_rerate(big, args.month)
        print(
            f"re-rating {args.month} ({rated['calls']} calls): {rated['unchanged_s']:.2f} s with "
            f"the same tariffs, {rated['changed_s']:.2f} s after a mobile price change "
            f"({rated['changed_rows']} rows rewritten) (goal < 5 s)",
            flush=True,
        )
    if "archive" not in skip:
        figures["archive"] = archived = bench_archive(big, args.folder, args.month)
        print(
            f"archive + prune of {args.month} ({archived['rows']} calls): "
            f"{archived['seconds']:.1f} s (write {archived.get('write_s', 0):.1f}, verify "
            f"{archived.get('verify_s', 0):.1f}, prune {archived.get('prune_s', 0):.1f}, "
            f"reclaim {archived.get('reclaim_s', 0):.1f}); archive {archived['file_mib']:.1f} "
            f"MiB; a core-like writer committed {archived['writer_commits_during']} records "
            f"meanwhile, longest wait {archived['writer_wait_max_ms']:.0f} ms (p50 "
            f"{archived['writer_wait_p50_ms']:.1f} ms; idle max "
            f"{archived['writer_wait_idle_max_ms']:.0f} ms)",
            flush=True,
        )
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
