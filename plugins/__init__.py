"""Provider plugins shipped with Styx (local, aws, gcp, azure), one package each."""
