"""Who is asking and whether they may: identities from cookies or bearer tokens, route
policy and path matching, per-route scopes, the gateway's cookies and trusted peers, and whether
an open WebSocket may go on running (its session's lease). Pure or store-backed; never calls the
identity provider.
"""
