"""The HTTP/1.1 client that carries proxied requests to the upstream: pool, connections and
responses, and what one client may hold of them (its share of the connections, the pace it must
keep). Knows nothing of identity.
"""
