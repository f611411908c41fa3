"""ka's benchmark harness and the pools of live loopback connections it measures on."""
