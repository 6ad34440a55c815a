"""The command line (typer): ``quotacast`` points at :func:`service.cli.serve.app.main`."""
