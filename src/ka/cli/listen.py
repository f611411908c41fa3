"""``ka listen``: listening sockets made with a policy, handed to a server by socket activation."""

from __future__ import annotations

import argparse

from .checks import UsageError
from .policy_args import add_policy_arguments, policy_from

EXAMPLES: tuple[str, ...] = (
    'ka listen 0.0.0.0:8000 --policy "idle=60 interval=10 count=5" -- gunicorn -k gthread app:app'
    "  # a server started on listeners that carry the policy",
    "ka listen [::]:8000 --policy within=30s --nodelay -- uvicorn --fd 3 app:app"
    "  # the same for uvicorn, TCP_NODELAY too",
    "systemd-socket-activate -l 8000 ka listen --inherited --policy within=30s -- uvicorn --fd 3 app:app"
    "  # keep the activator's sockets, add the policy",
)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], json_parent: argparse.ArgumentParser
) -> None:
    from .. import listen as listen_module

    listen = sub.add_parser(
        "listen",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="ka listen (ADDR [ADDR ...] | --inherited) [policy] [options] -- COMMAND [ARGS ...]",
        help="make listening sockets with a keepalive policy and exec a server on them (socket activation)",
        description="Make each listening socket with the policy (bind, the policy, then listen), pass\n"
        "them to COMMAND as descriptors 3, 4, ... and exec it with the systemd socket-activation\n"
        "variables LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES (and KA_POLICY). With --inherited,\n"
        "take the listeners ka itself was given that way (systemd, systemd-socket-activate) instead,\n"
        "give them the policy and pass them on. On Linux and FreeBSD accepted sockets inherit the\n"
        "listener's keepalive options (and TCP_NODELAY): the server needs nothing else. On macOS\n"
        "they do not (use the in-process glue, ka.integrations.*). Anything wrong before COMMAND\n"
        "starts (an address, a port in use, a policy, too few descriptors) ends ka with exit code 2.",
        epilog="examples:\n"
        '  KA_POLICY="idle=60 interval=10 count=5" ka listen 0.0.0.0:8000 -- gunicorn -w 2 app:app\n'
        "  ka listen 127.0.0.1:8000 --policy within=30s -- uvicorn --fd 3 app:app\n"
        "  ka listen [::]:8000 --idle 10m --interval 30s --count 4 -- hypercorn --bind fd://3 app:app\n"
        "  systemd-socket-activate -l 8000 ka listen --inherited --policy within=30s -- python srv.py",
    )
    add_policy_arguments(listen, "the policy (or KA_POLICY)")
    listen_module.add_arguments(listen)
    listen.add_argument(
        "rest", nargs=argparse.REMAINDER, metavar="ADDR ... -- COMMAND ...", help=argparse.SUPPRESS
    )
    listen.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import listen as listen_module

    try:
        before, args.program = listen_module.split_command(args.rest)
        # Options may come after the addresses too: read that part again, addresses and options.
        again = argparse.ArgumentParser(prog="ka listen", add_help=False)
        add_policy_arguments(again, "policy")
        listen_module.add_arguments(again)
        again.add_argument("addresses", nargs="*", metavar="ADDR")
        again.parse_args(before, namespace=args)
        policy = policy_from(args)
        return listen_module.run(args, policy)
    except listen_module.ListenError as exc:
        raise UsageError(str(exc)) from None
