"""cloud-api-adaptor: the worker-node daemon that creates pod VMs and proxies the agent API."""
