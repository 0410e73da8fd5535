"""PostgreSQL read-store behaviour the shared contract cannot show: sharing the event store's
database by default, its own schema version, concurrent first opens, projection processes
writing the same rows at once (SQLite serialises writers; PostgreSQL does not), and commits
that do not wait for their flush (the event store's do)."""

from __future__ import annotations

import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from eventbank.application.projections.runner import ProjectionRunner, Projector
from eventbank.application.service import LedgerService
from eventbank.cli import main
from eventbank.engines.postgres.event_store import SCHEMA_VERSION as EVENT_SCHEMA_VERSION
from eventbank.engines.postgres.event_store import PostgresEventStore
from eventbank.engines.postgres.json_rows import rows_param
from eventbank.engines.postgres.read_store import (
    _UPSERT_BALANCES,
    SCHEMA_VERSION,
    PostgresReadStore,
)
from eventbank.ports.event_store import SchemaTooNew
from eventbank.wiring import open_ledger
from tests.test_projections import assert_read_models_equal_replay, run_workload


def schema_versions(url: str) -> list[tuple[int, int]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT (SELECT version FROM schema_info), (SELECT version FROM read_schema_info)"
        ).fetchall()


def test_by_default_read_models_live_beside_the_events_with_their_own_schema_version(
    postgres_store_url,
):
    ledger = open_ledger(postgres_store_url)  # no read-store URL: the same database
    ledger.service.open_account("a", owner="Ann", account_type="CHECKING", initial_deposit="12.34")
    ledger.close()
    ledger = open_ledger(postgres_store_url)  # opening again migrates nothing and loses nothing
    try:
        assert ledger.reads.balance("a").balance_minor == 1234
    finally:
        ledger.close()
    with psycopg.connect(postgres_store_url) as conn:
        assert conn.execute(
            "SELECT (SELECT max(version) FROM events WHERE aggregate_id = 'a'),"
            " (SELECT version FROM account_balances WHERE account_id = 'a')"
        ).fetchone() == (2, 2)
    assert schema_versions(postgres_store_url) == [(EVENT_SCHEMA_VERSION, SCHEMA_VERSION)]


NOTE_SETTING = """
    CREATE TABLE commit_settings (written text, synchronous_commit text);
    CREATE FUNCTION note_setting() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
        INSERT INTO commit_settings VALUES (TG_TABLE_NAME, current_setting('synchronous_commit'));
        RETURN NULL;
    END $$;
    CREATE TRIGGER note AFTER INSERT ON events EXECUTE FUNCTION note_setting();
    CREATE TRIGGER note AFTER INSERT ON account_balances EXECUTE FUNCTION note_setting();
"""


def test_read_model_batches_commit_without_waiting_for_the_flush_and_events_with_it(
    postgres_store_url,
):
    """Each transaction's own setting, as a trigger in it reads it: the read model's batch
    does not wait for its WAL flush (read_store.py says why that loses nothing the runner
    cannot re-apply), the events' append does."""
    ledger = open_ledger(postgres_store_url)
    try:
        ledger.service.open_account("a", owner="Ann", account_type="CHECKING")
        with psycopg.connect(postgres_store_url, autocommit=True) as admin:
            admin.execute(NOTE_SETTING)
            ledger.service.deposit("a", "1.00")
            noted = admin.execute("SELECT * FROM commit_settings ORDER BY written").fetchall()
    finally:
        ledger.close()
    assert noted == [("account_balances", "off"), ("events", "on")]


def test_a_read_schema_newer_than_this_release_is_refused_clearly(
    postgres_store_url, monkeypatch, capsys
):
    PostgresReadStore.from_url(postgres_store_url).close()
    with psycopg.connect(postgres_store_url) as conn:
        conn.execute("UPDATE read_schema_info SET version = %s", (SCHEMA_VERSION + 1,))
    newer = f"read-model schema version {SCHEMA_VERSION + 1}, newer than this eventbank"
    with pytest.raises(SchemaTooNew, match=newer):
        PostgresReadStore.from_url(postgres_store_url)
    PostgresEventStore.from_url(postgres_store_url).close()  # the event store's is its own

    monkeypatch.setattr(sys, "argv", ["eventbank", "--store", postgres_store_url, "init"])
    monkeypatch.setenv("COLUMNS", "500")  # one unwrapped line
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    assert newer in capsys.readouterr().err


def test_concurrent_first_opens_of_both_stores_in_one_database_all_succeed(postgres_store_url):
    """Without the migration lock, the losers fail on pg_type's unique index (3 runs of 3)."""
    start = threading.Barrier(6)

    def open_one(n: int) -> PostgresEventStore | PostgresReadStore:
        start.wait(timeout=20)
        opener = PostgresReadStore if n % 2 else PostgresEventStore
        return opener.from_url(postgres_store_url)

    with ThreadPoolExecutor(6) as pool:
        stores = list(pool.map(open_one, range(6)))
    for store in stores:
        store.close()
    assert schema_versions(postgres_store_url) == [(EVENT_SCHEMA_VERSION, SCHEMA_VERSION)]


def test_projection_processes_racing_over_the_same_events_count_each_once(postgres_store_url):
    """Four runners, each with its own connections and batch size, project one feed at once.

    Their batches overlap, so the same rows are written concurrently in different orders:
    duplicates must be skipped (not double counted, nor refused as gaps) and no two batches
    may deadlock (either would raise here). Verified to fail without ``apply``'s account-id
    ordering: 2 runs of 3 raised StoreUnavailable ("deadlock detected").
    """
    events = PostgresEventStore.from_url(postgres_store_url)
    run_workload(LedgerService(events), random.Random(23), ops=200)
    reads = [PostgresReadStore.from_url(postgres_store_url) for _ in range(4)]
    runners = [
        ProjectionRunner(Projector(events, r), batch_size=size)
        for r, size in zip(reads, (7, 13, 29, 50), strict=True)
    ]
    start = threading.Barrier(len(runners))

    def catch_up(runner: ProjectionRunner) -> int:
        start.wait(timeout=20)
        return runner.catch_up()

    try:
        with ThreadPoolExecutor(len(runners)) as pool:
            list(pool.map(catch_up, runners))
        assert_read_models_equal_replay(events, reads[0])
    finally:
        for r in reads:
            r.close()
        events.close()


def test_a_reset_waits_for_a_batch_in_flight_so_nothing_it_wrote_survives(postgres_read_store_url):
    reads = PostgresReadStore.from_url(postgres_read_store_url)
    with psycopg.connect(postgres_read_store_url) as other:  # another process, mid-apply
        other.execute("INSERT INTO account_balances VALUES ('a', 'A', 'CHECKING', 'USD', 1,"
                      " 'OPEN', 1, '2026-01-01T00:00:00+00:00')")  # fmt: skip
        resetting = threading.Thread(target=reads.reset, args=("accounts",))
        resetting.start()
        time.sleep(0.3)
        assert resetting.is_alive(), "the reset did not wait for the batch in flight"
        other.commit()
    resetting.join(timeout=10)
    assert reads.all_balances() == []
    reads.close()


def test_a_batch_of_balances_looks_up_its_own_accounts_whatever_the_tables_size(
    postgres_read_store_url,
):
    """The upsert's check for an existing row probes the key of each account it writes; a plan
    that scans the whole table costs every projected batch time in proportion to the ledger
    (PostgreSQL chose one for tables below about 12,000 rows)."""
    reads = PostgresReadStore.from_url(postgres_read_store_url)
    reads.close()
    row = ["acct-1", "A", "CHECKING", "USD", 100, "OPEN", 2, "2026-01-01T00:00:00+00:00", 0, 0, 0]
    with psycopg.connect(postgres_read_store_url) as conn:
        conn.execute(
            "INSERT INTO account_balances (account_id, owner, account_type, currency,"
            " balance_minor, status, version, updated_at) SELECT 'acct-' || g, 'A', 'CHECKING',"
            " 'USD', 0, 'OPEN', 1, '2026-01-01T00:00:00+00:00' FROM generate_series(1, 11000) g"
        )
        conn.execute("ANALYZE account_balances")
        plan = (
            psycopg.ClientCursor(conn)
            .execute("EXPLAIN " + _UPSERT_BALANCES, rows_param([row] * 20))
            .fetchall()
        )
    text = "\n".join(line for (line,) in plan)
    assert "Seq Scan on account_balances" not in text, text
    assert "Index Only Scan using account_balances_pkey on account_balances known" in text, text
