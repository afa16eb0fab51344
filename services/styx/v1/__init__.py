"""Generated protobuf and gRPC stubs of proto/styx/v1 (python proto/generate.py); do not edit."""
