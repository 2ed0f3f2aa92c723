"""The one error type of the local server."""


class ServerError(RuntimeError):
    """The server could not be started, or stopped serving."""
