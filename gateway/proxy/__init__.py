"""The hot path: every request outside /.auth. Authenticate, decide, build the outbound
headers, forward to the upstream and stream the answer back (or relay a WebSocket). Never imports
MSAL.
"""
