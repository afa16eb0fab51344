"""An example Styx provider plugin (see docs/plugins.md)."""
