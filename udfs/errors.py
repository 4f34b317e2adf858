"""The one error type a user fixes: bad input, config, paths or a refused output.

The `clickweight` CLI prints a UserError (and FileNotFoundError) as one line and exits 2; every
other exception is a bug or an infrastructure failure and keeps its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """Something the user must change (input, config, a path); the message says what."""
