"""The gcp provider plugin of Styx (see provider.py)."""
