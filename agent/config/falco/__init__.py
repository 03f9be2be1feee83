"""Falco's `falco.yaml` read by the agent: its keys translated onto the agent's (table), `config_files` merged
(merge), and the keys without effect reported (report)."""

from agent.config.falco.merge import merge_config_files
from agent.config.falco.report import describe_unsupported, warn_unsupported_keys
from agent.config.falco.table import TABLE, markdown_table, translate

__all__ = ["TABLE", "describe_unsupported", "markdown_table", "merge_config_files", "translate",
           "warn_unsupported_keys"]
