"""Provider contract suite: one set of tests every provider plugin must pass."""
