"""``python -m styx.scheduler``."""

from styx.scheduler.main import main

main()
