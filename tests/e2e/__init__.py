"""End to end: the real gateway (in-process or `python -m gateway serve`) in front of the real echo
upstream, signing users in at the development identity provider over TLS (or at a third-party
OpenID provider), as browsers, API clients and replicas use it."""
