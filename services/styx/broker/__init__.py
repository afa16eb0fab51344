"""The resource broker service: nodes, capacity, placement, offer catalog, optimizer, clusters."""
