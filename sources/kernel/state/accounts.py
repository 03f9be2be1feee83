"""User and group names by id, per filesystem root (the host's or a container's), loaded once each."""

from __future__ import annotations

from sources.kernel.state.host import Accounts, HostView, UserEntry

#: What Falco shows for a user or group it cannot name.
UNKNOWN_NAME = "<NA>"


def parse_passwd(text: str) -> dict[int, UserEntry]:
    """Entries of an /etc/passwd file; malformed lines are skipped."""
    users: dict[int, UserEntry] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 7 or not parts[2].isdigit():
            continue
        uid = int(parts[2])
        users.setdefault(uid, UserEntry(uid, parts[0], parts[5], parts[6]))
    return users


def parse_group(text: str) -> dict[int, str]:
    """Names of an /etc/group file by gid; malformed lines are skipped."""
    groups: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 3 or not parts[2].isdigit():
            continue
        groups.setdefault(int(parts[2]), parts[0])
    return groups


class AccountBook:
    """Accounts per container id ("" for the host), asked of the host once per container.

    `load` runs on the record path (so that a capture records it in order); lookups only read.
    A container's own files win; ids they do not know fall back to nothing, as in Falco.
    """

    def __init__(self, host: HostView) -> None:
        self._host = host
        self._by_container: dict[str, Accounts] = {}

    def load(self, container_id: str, pid: int) -> None:
        if container_id not in self._by_container:
            self._by_container[container_id] = self._host.accounts(container_id, pid)

    def user(self, container_id: str, uid: int) -> UserEntry | None:
        accounts = self._by_container.get(container_id)
        return accounts.users.get(uid) if accounts is not None else None

    def group_name(self, container_id: str, gid: int) -> str | None:
        accounts = self._by_container.get(container_id)
        return accounts.groups.get(gid) if accounts is not None else None

