"""Subcommands of the ``zeroskip`` command line that live in their own module
(:mod:`.compress`: ``zeroskip compress ...``). They raise :class:`zeroskip.cli.CliError` (or
another :class:`~zeroskip.sw.errors.ZeroskipError`), which :func:`zeroskip.cli.main` prints as
``zeroskip: error: ...`` with exit status 1."""
