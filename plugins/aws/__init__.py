"""The aws provider plugin of Styx (see provider.py)."""
