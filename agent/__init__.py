"""falco-agent: Falco-language runtime threat detection over kernel, Kubernetes audit and CloudTrail events."""

__version__ = "0.1.0"
