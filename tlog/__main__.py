"""``python -m tlog``: the same as the ``tlog`` command."""

import sys

from tlog.cli import main

sys.exit(main())
