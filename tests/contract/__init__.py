"""Contracts that several implementations must keep alike: the Storage contract, run against every
store backend (memory, one redis-server, Sentinel, Cluster)."""
