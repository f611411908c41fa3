/* Stand-in: nothing the shim needs. */
