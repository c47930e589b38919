"""The refiner's optional dependencies, PyTorch and kornia: the ``refine`` extra of the package.

This module imports neither at its own import, so that the command line can check for them
before it starts work that would need them."""

from __future__ import annotations

from sceneforge.floor.errors import UserError

INSTALL = "pip install 'sceneforge[refine]'"


def require_refine_extra() -> None:
    """A user error (exit 2) saying how to install the extra when PyTorch or kornia is missing;
    every other command works without them."""
    try:
        import kornia  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise UserError(f"the refiner needs PyTorch and kornia, which are not installed ({exc}); "
                        f"install them with: {INSTALL}") from None
