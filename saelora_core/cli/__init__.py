"""The ``saelora`` command line: parsing (``app.py``), the subcommands, config flags."""
