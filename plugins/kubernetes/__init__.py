"""The kubernetes provider plugin of Styx (see provider.py)."""
