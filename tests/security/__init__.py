"""Security: the THREATS.md catalogue, one module per threat family (open redirects, the OAuth
flow, bearer and id tokens, header spoofing, path matching, cookies, HTTP framing, forward-auth,
information leakage), at whatever level each case needs. Every test names the catalogue rows it
checks with the `threat` marker (support/threats.py refuses a test here without one);
`pytest --threat RD-01` runs the tests of one row, wherever they are."""
