"""Resilience: the THREATS.md fault scenarios and the limits that keep the gateway up: Redis
failover and outages, restarts and rolling upgrades, shutdown, connection and request limits,
streaming and log backpressure."""
