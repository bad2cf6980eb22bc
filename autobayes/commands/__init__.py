"""Subcommands of the ``autobayes`` command line; each module exposes ``add_parser(subparsers)`` and
``run(args) -> int`` (see :mod:`autobayes.cli`)."""
