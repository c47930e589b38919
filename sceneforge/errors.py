"""Errors that reach the user as a message, never as a traceback."""


class UserError(Exception):
    """A mistake in the user's input (recipe, paths, options): the CLI prints it and exits 2."""


class RenderFailure(Exception):
    """Frames could not be rendered; the message names them and where their errors are."""


class StorageError(Exception):
    """The store could not be written (full disk, lost mount): frames written before stay valid."""
