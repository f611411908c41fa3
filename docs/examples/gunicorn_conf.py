"""A gunicorn config file whose listeners carry a keepalive policy:
``gunicorn -c gunicorn_conf.py app:app``."""

from ka.integrations.gunicorn import on_reload, on_starting, post_fork, when_ready

__all__ = ["on_reload", "on_starting", "post_fork", "when_ready"]

bind = ["127.0.0.1:8000"]
workers = 2
worker_class = "gthread"
# Read by ka's hooks (gunicorn ignores names it does not know); without it, KA_POLICY.
keepalive_policy = "idle=60 interval=10 count=5 user_timeout=auto"
