"""Runtime shared by every Styx process: config, errors, store, server bootstrap, clients."""
