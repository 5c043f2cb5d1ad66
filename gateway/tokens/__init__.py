"""JWTs in and out, pure: bearer access tokens API clients present, the gateway's own
id_token policy, and the signed identity assertion for the upstream.
"""
