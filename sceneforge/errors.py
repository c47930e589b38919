"""Errors that reach the user as a message, never as a traceback."""


class UserError(Exception):
    """A mistake in the user's input (recipe, paths, options): the CLI prints it and exits 2."""


class RenderFailure(Exception):
    """A frame could not be rendered; the message names the frame and the worker log."""
