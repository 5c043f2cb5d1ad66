"""msal-gateway: a reverse-proxy sidecar that signs users in with Microsoft Entra ID."""

__version__ = "0.1.0"
