"""PostgreSQL clients against a real server on loopback: libpq DSNs in both forms, the server's
settings checked against PostgreSQL's own ranges, and asyncpg's connection_class (also through
create_pool and SQLAlchemy). Each client socket is read back from this process's descriptors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

import ka
from client_peers import EXAMPLE_VALUES, linux_only, own_sockets, postgres_server, run_example
from helpers import EXPECTED, POLICY
from ka.integrations import (
    POSTGRES_SETTING_MAX,
    libpq_conninfo,
    postgres_options,
    postgres_server_settings,
)

pytestmark = linux_only


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with postgres_server() as server_port:
        yield server_port


def _all_carry_policy(port: int, expected_connections: int = 1) -> None:
    found = own_sockets(port)
    assert len(found) == expected_connections, found
    assert [values for _, values in found] == [EXPECTED] * expected_connections


# -- libpq DSNs (defect: a fragment appended to a URI became part of the database name) ----------


def test_libpq_conninfo_adds_keywords_in_the_dsn_form() -> None:
    policy = ka.KeepAlive(idle=60)
    assert libpq_conninfo(policy) == "keepalives=1 keepalives_idle=60"
    assert (
        libpq_conninfo(policy, "host=db dbname=app ") == "host=db dbname=app keepalives=1 keepalives_idle=60"
    )
    assert (
        libpq_conninfo(policy, "postgresql://db/app") == "postgresql://db/app?keepalives=1&keepalives_idle=60"
    )
    assert (
        libpq_conninfo(policy, "postgres://db/app?sslmode=disable")
        == "postgres://db/app?sslmode=disable&keepalives=1&keepalives_idle=60"
    )
    with pytest.raises(ValueError, match="fragment"):
        libpq_conninfo(policy, "postgresql://db/app#x")
    with pytest.raises(TypeError, match="dsn must be a libpq connection string"):
        libpq_conninfo(policy, b"host=db")  # type: ignore[arg-type]


@pytest.mark.parametrize("form", ["uri", "keywords"])
def test_psycopg_with_a_dsn_in_either_form(port: int, form: str) -> None:
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    if form == "uri":
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres?connect_timeout=10"
    else:
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=10"
    with psycopg.connect(libpq_conninfo(POLICY, dsn)) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)
        _all_carry_policy(port)


# -- server settings: PostgreSQL's ranges, not the client's platform ----------------------------


def test_server_ranges_are_postgresql_s(port: int) -> None:
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    names = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count", "tcp_user_timeout")
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres") as conn:
        rows = conn.execute(
            "SELECT name, min_val, max_val, unit FROM pg_settings WHERE name = ANY(%s) ORDER BY name",
            [list(names)],
        ).fetchall()
    assert {name: (int(low), int(high), unit) for name, low, high, unit in rows} == {
        "tcp_keepalives_count": (0, POSTGRES_SETTING_MAX, None),
        "tcp_keepalives_idle": (0, POSTGRES_SETTING_MAX, "s"),
        "tcp_keepalives_interval": (0, POSTGRES_SETTING_MAX, "s"),
        "tcp_user_timeout": (0, POSTGRES_SETTING_MAX, "ms"),
    }
    # Beyond this Linux client's own limits (idle 32767 s, 127 probes), inside PostgreSQL's.
    assert postgres_server_settings(idle=40000, count=200, user_timeout=0.1 * 3) == {
        "tcp_keepalives_idle": "40000",
        "tcp_keepalives_count": "200",
        "tcp_user_timeout": "300",
    }
    with pytest.raises(ValueError, match=r"tcp_keepalives_idle takes 1 to 2147483647 seconds"):
        postgres_server_settings(idle=POSTGRES_SETTING_MAX + 1)
    with pytest.raises(ValueError, match=r"tcp_user_timeout takes 0 to 2147483647 milliseconds"):
        postgres_options(user_timeout=-1)
    with pytest.raises(TypeError, match="not both"):
        postgres_server_settings(POLICY, idle=5)
    with pytest.raises(TypeError, match="give a policy or at least one"):
        postgres_server_settings()
    with pytest.raises(ValueError, match="the server always enables keepalive"):
        postgres_server_settings(ka.KeepAlive(enabled=False))


def test_a_freebsd_client_gives_a_linux_server_a_user_timeout(port: int) -> None:
    """On a FreeBSD client (no user timeout) KeepAlive(user_timeout=...) is refused; the server
    setting is not: it is checked against PostgreSQL's range, not the client's platform."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    script = (
        "import sys; sys.platform = 'freebsd14'\n"
        "import ka, ka.integrations as kai\n"
        "assert ka.capabilities().platform == 'freebsd'\n"
        "try:\n"
        "    ka.KeepAlive(60, user_timeout=30)\n"
        "except ValueError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('a simulated FreeBSD client took a user timeout')\n"
        "print(kai.postgres_options(idle=60, interval=10, count=5, user_timeout=30))\n"
    )
    env = {**os.environ, "KA_NO_EXTENSIONS": "1"}
    options = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()
    assert options == (
        "-c tcp_keepalives_idle=60 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=5 "
        "-c tcp_user_timeout=30000"
    )
    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", options=options
    ) as conn:
        assert conn.execute("SHOW tcp_user_timeout").fetchone() == ("30000",)


# -- asyncpg: connection_class -------------------------------------------------------------------


def test_asyncpg_connect_and_pool(port: int) -> None:
    asyncpg = pytest.importorskip("asyncpg", reason="asyncpg is not installed")
    import ka.integrations.asyncpg

    cls = ka.integrations.asyncpg.connection_class(POLICY)
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    async def main() -> None:
        conn = await asyncpg.connect(
            dsn, connection_class=cls, server_settings=postgres_server_settings(POLICY)
        )
        try:
            assert await conn.fetchval("SHOW tcp_keepalives_idle") == "33"
            _all_carry_policy(port)
        finally:
            await conn.close()
        async with asyncpg.create_pool(dsn, connection_class=cls, min_size=2, max_size=2) as pool:
            assert await pool.fetchval("SELECT 1") == 1
            _all_carry_policy(port, 2)

    asyncio.run(main())


def test_asyncpg_through_sqlalchemy(port: int) -> None:
    pytest.importorskip("asyncpg", reason="asyncpg is not installed")
    sqlalchemy_asyncio = pytest.importorskip("sqlalchemy.ext.asyncio", reason="SQLAlchemy is not installed")
    import sqlalchemy

    import ka.integrations.asyncpg

    async def main() -> None:
        engine = sqlalchemy_asyncio.create_async_engine(
            f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres",
            connect_args={"connection_class": ka.integrations.asyncpg.connection_class(POLICY)},
        )
        try:
            async with engine.connect() as conn:
                assert (await conn.execute(sqlalchemy.text("SELECT 1"))).scalar() == 1
                _all_carry_policy(port)
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_asyncpg_base_class_needs_a_policy(port: int) -> None:
    asyncpg = pytest.importorskip("asyncpg", reason="asyncpg is not installed")
    import ka.integrations.asyncpg

    async def main() -> None:
        with pytest.raises(TypeError, match="KeepAliveConnection has no policy"):
            await asyncpg.connect(
                f"postgresql://postgres@127.0.0.1:{port}/postgres",
                connection_class=ka.integrations.asyncpg.KeepAliveConnection,
            )
        for _ in range(3):  # the transport closes its socket on the loop's next turn
            await asyncio.sleep(0)
        assert own_sockets(port) == []  # the refused connection was closed, not leaked

    asyncio.run(main())
    with pytest.raises(TypeError, match=r"policy must be a ka\.KeepAlive"):
        ka.integrations.asyncpg.connection_class(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("example", ["clients_psycopg.py", "clients_asyncpg.py"])
def test_documentation_examples(port: int, example: str) -> None:
    pytest.importorskip(example[len("clients_") : -len(".py")], reason="the library is not installed")
    output = run_example(example, port)
    assert f"client end: {EXAMPLE_VALUES}" in output
    assert "server end: tcp_keepalives_idle = 60" in output


def test_asyncpg_failed_apply_terminates_the_connection(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    asyncpg = pytest.importorskip("asyncpg", reason="asyncpg is not installed")
    import ka.integrations.asyncpg

    def refuse(sock: object, policy: object) -> None:
        raise OSError(22, "refused for the test")

    monkeypatch.setattr(ka.integrations.asyncpg, "apply", refuse)

    async def main() -> None:
        with pytest.raises(OSError, match="refused for the test"):
            await asyncpg.connect(
                f"postgresql://postgres@127.0.0.1:{port}/postgres",
                connection_class=ka.integrations.asyncpg.connection_class(POLICY),
            )
        for _ in range(3):  # the transport closes its socket on the loop's next turn
            await asyncio.sleep(0)
        assert own_sockets(port) == []

    asyncio.run(main())
