"""The local provider plugin: nodes are agent processes on this machine."""
