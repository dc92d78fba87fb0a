"""Errors for problems a user can fix; the entry scripts print them as one line, no traceback."""


class ZooError(Exception):
    """A mistake in the user's input (a path, an override, a file). Its message names the
    cause and the fix."""


class ConfigError(ZooError, ValueError):
    """A config value that cannot work (a wrong size, an unknown option)."""


class DataNotFoundError(ZooError, FileNotFoundError):
    """A data set or file that is not where the config says."""


class DownloadError(ZooError, ConnectionError):
    """A download the user asked for that failed."""


class TrainingDivergedError(ZooError, FloatingPointError):
    """A loss became NaN or infinite; the checkpoints on disk are the last good ones."""


class RunInterrupted(ZooError):
    """A run stopped by SIGTERM (a scheduler's preemption, ``kill``) after saving a checkpoint
    to resume from; train.py exits with status 143 (128 + SIGTERM)."""
