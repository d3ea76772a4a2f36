"""Schema migrations for the appliance's SQLite files, one way for all of them.

Each store lists its migrations (append only, never edit a released one); migration ``i``
takes ``PRAGMA user_version`` from i to i + 1 inside one locked transaction with the version
bump, so a crash leaves the old version intact and a second process (the CLI next to the
running core) that migrated meanwhile is noticed under the lock. A database newer than the
firmware is refused, never written to.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

Migration = Callable[[sqlite3.Connection], None]


def migrate(
    connection: sqlite3.Connection,
    migrations: Sequence[Migration],
    what: str,
    error: Callable[[str], Exception] = RuntimeError,
) -> None:
    """Bring `connection` (autocommit mode) to ``len(migrations)``; `what` names it in messages."""
    target = len(migrations)
    while True:
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > target:
                raise error(
                    f"{what} schema version {version} is newer than this firmware supports "
                    f"({target}); refusing to write to it"
                )
            if version == target:
                connection.execute("COMMIT")
                return
            migrations[version](connection)
            connection.execute(f"PRAGMA user_version = {version + 1:d}")
            connection.execute("COMMIT")
            log.info("event=schema_migrated database=%r version=%d", what, version + 1)
        except BaseException:
            try:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
            except sqlite3.Error as rollback_error:
                log.warning("event=rollback_failed database=%r error=%s", what, rollback_error)
            raise
