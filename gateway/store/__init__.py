"""Bytes with a time to live: the Storage protocol and its backends (memory, Redis in
every shape), the measured wrapper and keyed locks. Only the composition root picks one.
"""
