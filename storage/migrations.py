"""Explicit, ordered schema migrations. Each runs once, inside a transaction, and is recorded
in ``_migrations``. Never edit a released migration: add a new one.

The same migrations build a SQLite and a PostgreSQL database: scripts are written in SQLite's
DDL, and PostgreSQL's engine reads its column types as its own (``integer`` as ``bigint``,
``real`` as ``double precision``, ``blob`` as ``bytea``, ``integer primary key`` as an
identity; ``storage/engine_postgres.py``). What one dialect needs and the other lacks is here
too, under ``dialect(db)``. On PostgreSQL, processes migrating at once take turns (an
advisory lock)."""

from __future__ import annotations

import time
from collections.abc import Callable

from understudy.storage import bodies, names, rollups
from understudy.storage.engine import Database, dialect
from understudy.storage.engine_postgres import COMPAT

Migration = Callable[[Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(name: str) -> Callable[[Migration], Migration]:
    def register(fn: Migration) -> Migration:
        MIGRATIONS.append((name, fn))
        return fn

    return register


def applied(db: Database) -> list[str]:
    if "_migrations" not in db.table_names():
        return []
    return [r["name"] for r in db.query("select name from _migrations order by id")]


_MIGRATION_LOCK = 0x756E6473  # the advisory lock replicas migrating at once take turns on


def migrate(db: Database) -> list[str]:
    """Apply every pending migration; return the names applied now."""
    if dialect(db) != "postgresql":
        return _migrate(db)
    with db.conn:
        db.execute("select pg_advisory_lock(?)", [_MIGRATION_LOCK])
    try:
        return _migrate(db)
    finally:
        with db.conn:
            db.execute("select pg_advisory_unlock(?)", [_MIGRATION_LOCK])


def _migrate(db: Database) -> list[str]:
    db.executescript(
        "create table if not exists _migrations "
        "(id integer primary key, name text unique not null, applied_at real not null)"
    )
    done = set(applied(db))
    ran: list[str] = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        with db.conn:
            fn(db)
            db.execute(
                "insert into _migrations (name, applied_at) values (?, ?)", [name, time.time()]
            )
        ran.append(name)
    return ran


@migration("0001_initial")
def _initial(db: Database) -> None:
    if dialect(db) == "postgresql":
        db.executescript(COMPAT)
    db.executescript(
        """
        create table requests (
            id text primary key,
            created_at real not null,
            endpoint text not null,
            task text not null,
            task_source text not null,
            requested_model text,
            teacher_model text,
            served_by text not null,
            status text not null,
            http_status integer,
            error text,
            stream integer not null default 0,
            latency_ms real,
            ttfb_ms real,
            prompt_tokens integer,
            completion_tokens integer,
            total_tokens integer,
            api_key_id text,
            route_reason text,
            confidence real,
            student_version text,
            request_json text not null,
            response_json text
        );
        create index requests_task_time on requests (task, created_at);
        create index requests_time on requests (created_at);

        create table student_attempts (
            id integer primary key,
            request_id text not null,
            created_at real not null,
            task text not null,
            student_version text not null,
            kind text not null,
            text text,
            response_json text,
            confidence real,
            features_json text,
            decision text,
            agreed integer,
            latency_ms real,
            prompt_tokens integer,
            completion_tokens integer
        );
        create index student_attempts_task on student_attempts (task, created_at);
        create index student_attempts_request on student_attempts (request_id);

        create table feedback (
            id integer primary key,
            request_id text not null,
            created_at real not null,
            score real,
            correction text,
            comment text
        );
        create index feedback_request on feedback (request_id);

        create table models (
            id text primary key,
            task text not null,
            version integer not null,
            created_at real not null,
            base text not null,
            adapter_path text,
            model_path text,
            status text not null,
            metrics_json text,
            router_json text,
            data_window_json text,
            run_id text,
            promoted_at real,
            unique (task, version)
        );

        create table task_state (
            task text primary key,
            mode text not null default 'routed',
            champion_id text,
            previous_id text,
            updated_at real not null,
            reason text
        );

        create table distill_runs (
            id text primary key,
            task text not null,
            started_at real not null,
            finished_at real,
            status text not null,
            trigger text,
            reason text,
            dataset_json text,
            gates_json text,
            metrics_json text,
            candidate_id text,
            promoted integer not null default 0
        );
        create index distill_runs_task on distill_runs (task, started_at);

        create table eval_results (
            id integer primary key,
            run_id text not null,
            model_id text not null,
            split text not null,
            metrics_json text not null
        );

        create table events (
            id integer primary key,
            created_at real not null,
            task text,
            kind text not null,
            detail_json text
        );
        create index events_task on events (task, created_at);

        create table heartbeat (id integer primary key check (id = 1), at real not null);
        """
    )


@migration("0002_distiller")
def _distiller(db: Database) -> None:
    db.executescript(
        """
        create table golden_examples (
            id integer primary key,
            task text not null,
            created_at real not null,
            input_json text not null,
            expected text not null,
            note text
        );
        create index golden_examples_task on golden_examples (task);

        create table distill_locks (
            task text primary key,
            owner text not null,
            run_id text,
            host text not null,
            pid integer not null,
            acquired_at real not null,
            heartbeat_at real not null,
            expires_at real not null
        );

        alter table distill_runs add column host text;
        alter table distill_runs add column pid integer;
        alter table distill_runs add column heartbeat_at real;
        alter table distill_runs add column run_dir text;
        """
    )


@migration("0003_costs")
def _costs(db: Database) -> None:
    db.executescript(
        """
        alter table requests add column teacher_cost_usd real;
        alter table requests add column student_cost_usd real;
        alter table requests add column avoided_cost_usd real;
        alter table requests add column saved_usd real;
        """
    )


@migration("0004_passthrough_rows")
def _passthrough_rows(db: Database) -> None:
    """Pass-through calls (embeddings, files, audio, ...) are logged as metadata rows: the
    method, the path with ids replaced, and the bytes each way."""
    db.executescript(
        """
        alter table requests add column http_method text;
        alter table requests add column path_label text;
        alter table requests add column bytes_in integer;
        alter table requests add column bytes_out integer;
        """
    )


@migration("0005_responses_state")
def _responses_state(db: Database) -> None:
    """Responses API state: the response id a row answered with (the gateway's for a student
    answer, the teacher's otherwise), whether it is stored (``store``), and when it was
    deleted (``DELETE /v1/responses/{id}``)."""
    db.executescript(
        """
        alter table requests add column response_id text;
        alter table requests add column stored integer;
        alter table requests add column deleted_at real;
        create index requests_response_id on requests (response_id);
        """
    )


@migration("0006_cost_estimates")
def _cost_estimates(db: Database) -> None:
    """Whether a row's avoided cost is an estimate (valued before the token ratio was known)."""
    db.executescript("alter table requests add column cost_estimated integer;")


@migration("0007_security")
def _security(db: Database) -> None:
    """Feedback records who gave it: the gateway key's id, and whether it came with the admin
    key (``reviewed``: only a reviewed correction may enter a held-out slice)."""
    db.executescript(
        """
        alter table feedback add column api_key_id text;
        alter table feedback add column reviewed integer;
        """
    )


@migration("0008_rollups")
def _rollups(db: Database) -> None:
    """Hourly rollups of the log (``storage/rollups.py``), which every report, the dashboard and
    the budgets read instead of ``requests``; filled here from the rows already logged."""
    rollups.create(db.conn)
    rollups.backfill(db.conn)


@migration("0009_compact_bodies")
def _compact_bodies(db: Database) -> None:
    """Bodies kept compact (``storage/bodies.py``): new rows store their request and response
    as zstd frames in ``request_body`` / ``response_body``, compressed with a dictionary from
    ``body_dictionaries``; older rows keep their text and read as before. Indexes for the reads
    that scan: retention finds old attempts and feedback by time, the distiller finds the
    newest rows of a task from the index alone."""
    db.executescript(
        """
        alter table requests add column request_body blob;
        alter table requests add column response_body blob;
        create table body_dictionaries (
            id bigint primary key,
            created_at real not null,
            samples integer not null,
            dictionary blob not null
        );
        create index requests_task_time_served on requests (task, created_at, served_by);
        drop index requests_task_time;
        create index student_attempts_time on student_attempts (created_at);
        create index feedback_time on feedback (created_at);
        """
    )


@migration("0010_daily_rollups")
def _daily_rollups(db: Database) -> None:
    """Daily twins of the hourly request and latency rollups (``storage/rollups.py``): a
    month's report reads a row per day and group, not one per hour; filled from the hourly
    ones."""
    rollups.create_daily(db.conn)
    rollups.fill_daily(db.conn)


@migration("0011_dashboard_sessions")
def _dashboard_sessions(db: Database) -> None:
    """Dashboard sessions shared by every gateway process on the database (the hash of each
    token and when it ends): a sign-in on one worker holds on the others."""
    db.executescript(
        """
        create table dashboard_sessions (
            digest text primary key,
            expires_at real not null
        );
        create index dashboard_sessions_expiry on dashboard_sessions (expires_at);
        """
    )


@migration("0012_minute_rollups")
def _minute_rollups(db: Database) -> None:
    """Request sums per minute for the last days (``storage/rollups.py``): a recent window is
    counted to the minute at its ends; filled from the rows logged in that span."""
    rollups.create_minutes(db.conn)
    rollups.fill_minutes(db.conn, time.time())


@migration("0013_rate_buckets")
def _rate_buckets(db: Database) -> None:
    """Rate limits shared by every gateway process on the database (``limits.rate_lease_s``):
    each client's token bucket, which processes lease tokens from (``storage/rate_limits.py``)."""
    db.executescript(
        """
        create table rate_buckets (
            client text primary key,
            tokens real not null,
            at real not null
        );
        """
    )


@migration("0014_task_rollups")
def _task_rollups(db: Database) -> None:
    """Per-task twins of the hourly and daily request rollups (hour x task x ``served_by``,
    ``storage/rollups.py``): the headline, the per-task and per-day figures and the dashboard's
    charts read a few times fewer rows than the wide tables; filled from them."""
    rollups.create_tasks(db.conn)
    rollups.fill_tasks(db.conn)


@migration("0016_shared_limits")
def _shared_limits(db: Database) -> None:
    """What every gateway process on the database shares to keep limits exact: each request in
    flight's hold on its key's monthly budget (its owner renews it; a dead owner's lapses), and
    failed key checks per client address (``storage/limits.py``); rate buckets by age, to prune
    the idle ones."""
    db.executescript(
        """
        create table budget_reservations (
            id text primary key,
            api_key_id text not null,
            tokens integer not null,
            owner text not null,
            expires_at real not null
        );
        create index budget_reservations_key on budget_reservations (api_key_id, expires_at);
        create index budget_reservations_owner on budget_reservations (owner);
        create table auth_failures (
            id integer primary key,
            address text not null,
            at real not null
        );
        create index auth_failures_address on auth_failures (address, at);
        create index auth_failures_at on auth_failures (at);
        create index rate_buckets_at on rate_buckets (at);
        """
    )


@migration("0015_one_body_frame")
def _one_body_frame(db: Database) -> None:
    """A logged request's bodies in one blob (``storage/bodies.py``): the request and response
    as one zstd frame in ``bodies`` (a frame per body cost its own header, and the response
    compresses better after its request); every row logged so far is converted, 500 at a
    time. The Responses store's index holds only the rows that have a response id (chat rows,
    most of the log, have none). Safe to run again after an interruption (SQLite commits a
    script's DDL at once): what is done is kept, the conversion goes on where it stopped."""
    columns = [d[0] for d in db.execute("select * from requests limit 0").description]
    if "bodies" not in columns:
        db.executescript("alter table requests add column bodies blob;")
    db.executescript(
        """
        drop index if exists requests_response_id;
        create index requests_response_id on requests (response_id)
            where response_id is not null;
        """
    )
    bodies.convert(db)


@migration("0014_key_rollups")
def _key_rollups(db: Database) -> None:
    """Per-key twins of the hourly and daily request rollups (hour x gateway key id x endpoint
    family x ``served_by``, ``storage/rollups.py``): the per-key figures and the relayed calls
    read a few rows an hour instead of the wide tables'; filled from them."""
    rollups.create_keys(db.conn)
    rollups.fill_keys(db.conn)


@migration("0017_task_latency")
def _task_latency(db: Database) -> None:
    """Per-task twins of the hourly and daily latency buckets (hour x task x ``served_by`` x
    bucket, the tasks' answers only, ``storage/rollups.py``): the latency percentiles read
    them, through an index that covers them, instead of the wide tables' rows per endpoint
    family and of shadow checks and relayed calls; filled from them."""
    rollups.create_task_latency(db.conn)
    rollups.fill_task_latency(db.conn)


@migration("0018_token_pairs")
def _token_pairs(db: Database) -> None:
    """What the cost book learns, per hour x task (``storage/rollups.py``): the teacher answers'
    token sums and the (student attempt, teacher answer) token pairs, and each task's latest
    teacher model: its refresh reads these instead of joining 30 days of ``requests`` with the
    attempts; filled from the whole log."""
    rollups.create_token_pairs(db.conn)
    rollups.fill_token_pairs(db.conn)


@migration("0019_hour_changes")
def _hour_changes(db: Database) -> None:
    """Per hour, the request rows logged and a stamp each write changes (``rollup_hours``,
    ``storage/rollups.py``): a report keeps the sums of the closed hours and days of its
    window it has read, and knows from at most a row an hour whether they changed; filled
    from the per-task hourly sums."""
    rollups.create_hours(db.conn)
    rollups.fill_hours(db.conn)


@migration("0020_short_names")
def _short_names(db: Database) -> None:
    """Repeated names as short codes (``storage/names.py``): the log writes a row's endpoint
    family, task source, requested and teacher model as a code naming a row of
    ``log_names``; every row logged so far is converted, 500 at a time. Safe to run again
    after an interruption: rows already coded are left as they are."""
    db.executescript(names.DDL)
    names.convert(db)


@migration("0021_budget_usd_holds")
def _budget_usd_holds(db: Database) -> None:
    """A request in flight holds its worst-case teacher USD of its key's ``monthly_usd`` too
    (``storage/limits.py``), beside its tokens; a process's slice of a key's budget is a hold
    of both."""
    db.executescript("alter table budget_reservations add column usd real not null default 0;")
