"""The one error type for problems a user can fix."""


class ZooError(Exception):
    """A mistake in the user's input (a path, an override, a file); the entry scripts print it
    as one line, without a traceback. Its message names the cause and the fix."""
