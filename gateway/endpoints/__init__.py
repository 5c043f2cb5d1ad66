"""The cold path: every /.auth/* handler (sign-in and its callback, sign-out,
me/verify/refresh, health) and what they share (return targets, rate limits).
"""
