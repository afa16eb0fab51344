"""The node agent: registers the node, runs assigned tasks, ships their logs and status."""
