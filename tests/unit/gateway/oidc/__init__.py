"""Unit tests of gateway.oidc: completing a sign-in without HTTP."""
