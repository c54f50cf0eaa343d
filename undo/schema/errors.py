"""Errors a user can cause. The CLI prints them as one line and exits with code 2 (no traceback)."""


class UserError(Exception):
    """Bad input from the user: config, paths, data, checkpoints. The message says what and how to fix it."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
