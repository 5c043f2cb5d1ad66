"""msal-gateway: a reverse-proxy sidecar that signs users in with Microsoft Entra ID.

The version is the package's metadata (gateway.telemetry.build_info.version()); pyproject.toml
states it.
"""
