"""``ka listen``: listening sockets made with a policy, handed to a server by socket activation."""

from __future__ import annotations

import argparse

from .checks import UsageError
from .policy_args import add_policy_arguments, policy_from


def run(args: argparse.Namespace) -> int:
    from .. import listen as listen_module

    try:
        before, args.program = listen_module.split_command(args.rest)
        # Options may come after the addresses too: read that part again, addresses and options.
        again = argparse.ArgumentParser(prog="ka listen", add_help=False)
        add_policy_arguments(again, "policy")
        listen_module.add_arguments(again)
        again.add_argument("addresses", nargs="+", metavar="ADDR")
        again.parse_args(before, namespace=args)
        policy = policy_from(args)
        return listen_module.run(args, policy)
    except listen_module.ListenError as exc:
        raise UsageError(str(exc)) from None
