"""``python -m sceneforge``, and the ``sceneforge`` command's entry point.

The CLI is imported inside ``main``, not at the top: every worker that the ``sceneforge`` command
spawns runs the command's script again (multiprocessing's spawn re-imports the parent's main
script), and that script imports this module, so a worker would otherwise import the CLI (typer,
rich, pydantic) too, about 0.2 s of its start-up.
"""


def main() -> None:
    """Run the command line (``sceneforge.cli.main``)."""
    from sceneforge.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
