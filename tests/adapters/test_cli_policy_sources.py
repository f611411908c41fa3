"""ka apply takes its policy from KA_POLICY, from --policy, or from flags (which beat the environment)."""

from __future__ import annotations

import json
import os
import sys

import pytest

from ka.policy import KeepAlive
from live_helpers import echo_server, ka_command


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ka apply is Linux only")
def test_ka_apply_takes_the_policy_from_ka_policy_or_policy() -> None:
    with echo_server(2, 0) as server:
        env = {**os.environ, "KA_POLICY": "idle=37 interval=6 count=3"}
        out = ka_command("apply", "--pid", str(server.pid), "--dry-run", "--json", env=env)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["policy"] == KeepAlive(37, 6, 3).as_dict()
        # --policy (or flags) beat the environment
        out = ka_command(
            "apply", "--pid", str(server.pid), "--dry-run", "--json", "--policy", "within=30s", env=env
        )
        assert json.loads(out.stdout)["policy"] == KeepAlive.within(30).as_dict()
        bad = ka_command("apply", "--pid", str(server.pid), "--dry-run", env={**env, "KA_POLICY": "idle=x"})
        assert bad.returncode == 2
        assert "environment variable KA_POLICY: keepalive policy 'idle=x': part 'idle=x'" in bad.stderr
