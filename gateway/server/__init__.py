"""The process: serving HTTP, worker processes on one port, client connections and what
the HTTP parser refuses.
"""
