"""The azure provider plugin of Styx (see provider.py)."""
