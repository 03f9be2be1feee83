"""`host:port` listen addresses as the configuration writes them."""

from __future__ import annotations


def parse_host_port(text: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (every interface) → (host, port); ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address '{text}' must look like host:port, e.g. 127.0.0.1:9765")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)
