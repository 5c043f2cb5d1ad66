"""The test kit: what the tests and the bench scripts share to run the real things on loopback,
on free ports. The development identity provider in a thread (idp); redis-server, Sentinel and
Cluster processes (redis_server, redis_sentinel); nginx with the documented forward-auth snippet
(nginx); gateways in-process or as `python -m gateway serve` (gateway, served); the echo upstream
(upstream); a third-party OpenID provider (third_party_op); scripted browsers (browser) and their
WebSockets (websockets); raw HTTP/1.1 (raw_http); crafted JWTs (jwts); and small things: /proc
readings (procfs), ports, binaries, repository paths.

It is importable as `support`: pytest puts tests/ on its path (`pythonpath` in pyproject.toml),
and `scripts/bootstrap.sh test` writes a .pth file naming tests/ into the virtualenv, so that
`.venv/bin/python bench/soak.py` imports it as well. tests/conftest.py registers its fixtures.
"""
