"""psycopg (libpq) with a keepalive policy on both ends, from a URI DSN:
``python clients_psycopg.py PORT`` against PostgreSQL on 127.0.0.1 (user postgres, trust)."""

from __future__ import annotations

import sys

import psycopg

import ka
import ka.integrations as kai

policy = ka.KeepAlive(idle=60, interval=10, count=5, user_timeout="auto")
dsn = kai.libpq_conninfo(policy, f"postgresql://postgres@127.0.0.1:{sys.argv[1]}/postgres")
with psycopg.connect(dsn, options=kai.postgres_options(policy)) as conn:
    print("client end:", ka.read(conn.pgconn.socket))
    row = conn.execute("SHOW tcp_keepalives_idle").fetchone()
    print("server end: tcp_keepalives_idle =", row[0] if row else None)
