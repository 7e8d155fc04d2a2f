"""The run journal: every run, step and attempt in SQLite, and the per-plan lock.

- :mod:`~runbook.journal.schema`: the tables and their columns, the one list of them,
  and the migrations written from it;
- :mod:`~runbook.journal.store`: the database of one state dir (its connection, typed
  queries);
- :mod:`~runbook.journal.writes`: what each event writes, and whether the executor waits
  for its commit;
- :mod:`~runbook.journal.sink`: the executor sink that group-commits those writes;
- :mod:`~runbook.journal.rows`: what a row must hold before runbook acts on it;
- :mod:`~runbook.journal.lock`: one ``apply`` per plan at a time;
- :mod:`~runbook.journal.location`: which state dir, when a command does not say.
"""

from __future__ import annotations

from runbook.errors import JournalError
from runbook.journal.location import state_dir
from runbook.journal.lock import PlanLock
from runbook.journal.sink import JournalSink
from runbook.journal.store import RunRow, Store

__all__ = ["JournalError", "JournalSink", "PlanLock", "RunRow", "Store", "state_dir"]
