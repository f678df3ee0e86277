"""The ``ltx-ane`` command line: one subcommand per task, sharing argument groups from ``common``."""
