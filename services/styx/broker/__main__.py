"""``python -m styx.broker``."""

from styx.broker.main import main

main()
