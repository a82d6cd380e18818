"""`python -m pyrun.cli`."""

import sys

from pyrun.cli import main

sys.exit(main())
