"""Agent configuration: the schema with its defaults, and loading YAML plus overrides into it."""

from agent.config.load import load_config
from agent.config.schema import AgentConfig

__all__ = ["AgentConfig", "load_config"]
