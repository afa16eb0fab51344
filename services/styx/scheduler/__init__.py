"""The scheduler service: jobs, tasks, DAGs, priorities, retries, dispatch to agents, events, logs."""
