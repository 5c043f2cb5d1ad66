"""The gateway's state as typed records: sessions, their cache and index, pending
sign-ins, MSAL token caches, and the sealing that keeps them secret in the store.
"""
