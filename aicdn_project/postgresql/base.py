"""Django's PostgreSQL backend, with a connection pool whose checkout check makes no round trip unless needed.

Used as the database ENGINE when the pool is on (settings: DB_POOL). Everything but `pool` is Django's own.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool


def check_connection(conn: Any) -> None:
    """The pool's `check` (run on every checkout): raise if the connection cannot be used.

    psycopg_pool's own `ConnectionPool.check_connection` sends an empty query every time: a round trip on every
    request that touches the database (0.6-0.9 ms of bench/load.py's per-request cost, measured). An idle
    connection has nothing to read: when the server closes it (a restart, a crash, an idle timeout, an admin's
    pg_terminate_backend) its socket turns readable (the FATAL notice, then EOF). So the round trip is made only
    when the socket has something to read or is in error; a connection lost without a word from the server (a
    network cut) is found by its first query instead, answered with a 503, and dropped by the pool.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        ConnectionPool.check_connection(conn)


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> ConnectionPool | None:
        """Django's pool (django.db.backends.postgresql.base.DatabaseWrapper.pool, Django 5.2) with `check` above:
        Django passes `check` itself (psycopg_pool's round trip, or none), so it cannot come from OPTIONS."""
        pool_options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not pool_options:
            return None
        if self.alias not in self._connection_pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            connect_kwargs = self.get_connection_params()
            connect_kwargs["autocommit"] = True  # as Django: it sets the real mode later on
            pool = ConnectionPool(
                kwargs=connect_kwargs,
                open=False,  # opened on first use, as Django does
                configure=self._configure_connection,
                check=check_connection,
                **({} if pool_options is True else pool_options),
            )
            self._connection_pools.setdefault(self.alias, pool)
        return self._connection_pools[self.alias]  # type: ignore[no-any-return]
