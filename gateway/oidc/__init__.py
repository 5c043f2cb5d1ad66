"""Talking to the identity provider: the MSAL facade (the only MSAL caller), discovery,
client credentials, Microsoft Graph, token refresh and API callers (OBO).
"""
