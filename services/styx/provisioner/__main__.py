"""``python -m styx.provisioner``: same as ``styx-provisioner``."""

from styx.provisioner.main import main

main()
