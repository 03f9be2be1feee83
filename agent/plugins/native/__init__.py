"""The native layer of Falco's plugin API (3.12): ctypes bindings, the scap plugin-event layout, the library
loader, sourcing as a LiveSource and batched field extraction. Nothing here knows the agent's configuration."""
