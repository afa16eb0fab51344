"""The SSH provider plugin: Styx nodes on machines reached over SSH (see provider.py)."""
