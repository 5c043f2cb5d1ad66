"""What operators see: Prometheus metrics, log lines and the audit log, tracing, and
build information.
"""
