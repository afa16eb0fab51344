"""The ``sky`` command line: a thin gRPC client of the Styx control plane."""
