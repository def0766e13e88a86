"""attnrec: the small core every stage shares, and the command line above the stages.

The core knows no stage: settings (every environment variable), lake (paths, staged publish), contracts (schemas,
event types, dates), spark (the one session builder) and args (the options every entry point shares). ``cli`` is
the top layer: the ``attnrec`` command, whose subcommands call the stages. pyproject.toml's import-linter contracts
hold the layering.
"""

__version__ = "0.1.0"
