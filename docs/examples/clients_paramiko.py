"""paramiko over a socket carrying a keepalive policy:
``python clients_paramiko.py PORT KEY_FILE`` against an sshd on 127.0.0.1 that takes the key."""

from __future__ import annotations

import getpass
import sys

import paramiko

import ka
import ka.integrations.paramiko

policy = ka.KeepAlive(idle=60, interval=10, count=5, user_timeout="auto")
with paramiko.SSHClient() as client:
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a throwaway test server
    ka.integrations.paramiko.connect(
        client, "127.0.0.1", policy, int(sys.argv[1]),
        username=getpass.getuser(), key_filename=sys.argv[2], allow_agent=False, look_for_keys=False,
    )  # fmt: skip
    transport = client.get_transport()
    assert transport is not None
    print("paramiko", paramiko.__version__, ka.read(transport.sock))
