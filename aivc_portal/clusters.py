"""Names of django-q clusters. Kept free of imports so settings.py can use it: the name an
agent's cluster listens on and the name tasks for its host are queued to must agree."""

SCHEDULER_CLUSTER = "aivc"


def agent_cluster(host_name: str) -> str:
    """The cluster (and ORM broker queue) of the agent that serves the host `host_name`."""
    return f"{SCHEDULER_CLUSTER}-{host_name}"
