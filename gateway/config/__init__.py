"""Configuration: one frozen Settings model, its groups by domain, and loading it from
GATEWAY_* variables and an optional YAML file, with one-line reports of every problem.
"""
