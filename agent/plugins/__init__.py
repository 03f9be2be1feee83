"""Plugins: event sources and fields beyond the agent's own; `agent.plugins.api` is what a plugin imports."""
