"""The two errors a user sees as one line and exit code 2 (cli.py); everything else is a bug with a traceback.

A leaf: every module may raise these, and this module imports nothing of trainrun's.
"""


class ConfigError(ValueError):
    """A bad or impossible configuration: reported to the user in one line, exit code 2."""


class DataError(RuntimeError):
    """A dataset that cannot be loaded (missing files offline, corrupt files, a user's file or code that
    fails): one line, exit code 2."""
