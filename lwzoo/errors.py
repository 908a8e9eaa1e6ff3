"""The one error type users see. The CLI prints it as a single line; LWZOO_DEBUG=1 shows the traceback."""


class LwzooError(Exception):
    """A problem with the user's input or environment, phrased with its fix."""
