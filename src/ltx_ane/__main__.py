"""``python -m ltx_ane ...``: the ``ltx-ane`` command, for environments where the console script is not on PATH
(a bare ``PYTHONPATH=src`` checkout, a machine the package was copied to without installing it)."""

import sys

from ltx_ane.cli.main import main

sys.exit(main())
