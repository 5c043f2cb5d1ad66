"""The HTTP/1.1 client that carries proxied requests to the upstream: pool,
connections and responses. Knows nothing of identity.
"""
