"""A PostgreSQL deadlock is told apart from other failures, so writes can run again."""

from __future__ import annotations

import os
import threading

import pytest
import sqlalchemy as sa

from nas.db import LatencyDB
from nas.db._engine import RetryableError
from nas.errors import DatabaseError

URL = os.environ.get("NAS_TEST_POSTGRES_URL")
pytestmark = pytest.mark.postgres


@pytest.mark.skipif(not URL, reason='NAS_TEST_POSTGRES_URL is not set (eval "$(.ci/postgres.sh)")')
def test_a_real_deadlock_is_retryable_and_other_errors_are_not() -> None:
    engine = sa.create_engine(URL)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS nas_deadlock_probe"))
        conn.execute(sa.text("CREATE TABLE nas_deadlock_probe (id int primary key, v int)"))
        conn.execute(sa.text("INSERT INTO nas_deadlock_probe VALUES (1, 0), (2, 0)"))
    barrier = threading.Barrier(2)
    caught: list[BaseException] = []

    def cross(first: int, second: int) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE nas_deadlock_probe SET v = v + 1 WHERE id = :i"),
                             {"i": first})
                barrier.wait(10)
                conn.execute(sa.text("UPDATE nas_deadlock_probe SET v = v + 1 WHERE id = :i"),
                             {"i": second})
        except sa.exc.DBAPIError as exc:
            caught.append(exc)

    threads = [threading.Thread(target=cross, args=a) for a in ((1, 2), (2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(caught) == 1, caught  # the server aborted exactly one of the two
    db = LatencyDB(URL)
    assert isinstance(db._translate(caught[0], "probing"), RetryableError)
    other = db._translate(ValueError("syntax error at or near"), "probing")
    assert isinstance(other, DatabaseError)
    assert not isinstance(other, RetryableError)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE nas_deadlock_probe"))
