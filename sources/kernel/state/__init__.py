"""User-space state of the kernel source: processes, threads, fds, users and containers."""

from sources.kernel.state.context import StateLimits
from sources.kernel.state.host import Accounts, ContainerMeta, FdSnapshot, HostView, ProcessSnapshot, UserEntry
from sources.kernel.state.kernel_state import KernelState, StateObserver
from sources.kernel.state.live_host import LiveHostView, live_state
from sources.kernel.state.payload import SyscallEvent

__all__ = [
    "Accounts",
    "ContainerMeta",
    "FdSnapshot",
    "HostView",
    "KernelState",
    "LiveHostView",
    "ProcessSnapshot",
    "StateLimits",
    "StateObserver",
    "SyscallEvent",
    "UserEntry",
    "live_state",
]
