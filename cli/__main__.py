"""``python -m styx_cli`` = ``sky``."""

import sys

from styx_cli.main import main

sys.exit(main())
