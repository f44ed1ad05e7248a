"""``python -m service.cli``: the ``junction`` command without the installed script."""

import sys

from service.cli import main

sys.exit(main())
