"""``python -m styx.agent``: same as ``styx-agent``."""

from styx.agent.main import main

main()
