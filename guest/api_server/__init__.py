"""api-server-rest: the loopback HTTP front of the AA and the CDH for workloads."""
