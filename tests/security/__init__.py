"""Security: the THREATS.md catalogue, one module per threat family (open redirects, the OAuth
flow, bearer and id tokens, header spoofing, path matching, cookies, HTTP framing, forward-auth,
the Redis store, information leakage), at whatever level each case needs."""
