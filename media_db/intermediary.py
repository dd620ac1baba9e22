"""Is the server backend at the other end of our own socket? The one check, shared by the
deploy (which refuses anything in between) and the pool (which then stops preparing statements).

The backend sees both ends of its connection (`inet_client_addr()`/`inet_client_port()`, and
`inet_server_addr()`/`inet_server_port()`); a direct connection is our socket's own, local end
and peer alike. Over a Unix socket, the process we connected to must be the backend's parent,
the postmaster. A pooler, a TCP proxy or NAT in between shows whatever traffic it carries:
nothing here depends on which backend is handed out.
"""

import ipaddress
import os
import socket
import struct
from pathlib import Path

# The connection as the backend sees it (its client's end, then its own), and the backend (to
# find its postmaster over a Unix socket).
BACKEND_END = (
    "SELECT host(inet_client_addr()), inet_client_port(), host(inet_server_addr()), "
    "inet_server_port(), pg_backend_pid()"
)
Row = tuple[str | None, int | None, str | None, int | None, int]


def between(fd: int, seen: Row) -> str | None:
    """What shows that something sits between the socket `fd` and the backend that answered
    BACKEND_END with `seen`; None when the backend is at the other end."""
    with socket.socket(fileno=os.dup(fd)) as ours:  # a duplicate: closing it keeps the original
        return _between(ours, *seen)


def _between(
    ours: socket.socket,
    address: str | None,
    port: int | None,
    server_address: str | None,
    server_port: int | None,
    pid: int,
) -> str | None:
    if ours.family == socket.AF_UNIX:
        if address is not None:
            return f"we use a Unix socket, the server sees a TCP client at {address}:{port}"
        return _behind_unix_socket(_peer_pid(ours), pid)
    our_address, our_port = ours.getsockname()[:2]
    peer_address, peer_port = ours.getpeername()[:2]
    if address is None or port is None or server_address is None:
        return f"we connect over TCP from port {our_port}, the server sees a Unix-socket client"
    # Both ends: two connections from one host may share a local port (to other destinations),
    # so the client's end alone could match a pooler's own connection by chance.
    if (
        _same_host(our_address, address)
        and our_port == port
        and _same_host(peer_address, server_address)
        and peer_port == server_port
    ):
        return None
    return (
        f"the server sees {address}:{port} -> {server_address}:{server_port}, our socket is "
        f"{our_address}:{our_port} -> {peer_address}:{peer_port}"
    )


def _same_host(ours: str, theirs: str) -> bool:
    def normal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        found = ipaddress.ip_address(text.split("%", 1)[0])
        mapped = found.ipv4_mapped if isinstance(found, ipaddress.IPv6Address) else None
        return mapped or found

    return normal(ours) == normal(theirs)


def _peer_pid(ours: socket.socket) -> int:
    """The pid of the process that listens behind a Unix socket; 0 where the system does not
    tell (no SO_PEERCRED: not Linux), which the check counts as unverified."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return 0
    credentials = ours.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    return int(struct.unpack("3i", credentials)[0])


def _behind_unix_socket(server_pid: int, backend_pid: int) -> str | None:
    if not server_pid:
        return (
            "the system does not say which process listens on the Unix socket (it runs in a "
            "PID namespace this one cannot see, or the system has no SO_PEERCRED), so the "
            "check cannot tell a pooler from the server"
        )
    if _parent_pid(backend_pid) == server_pid:
        return None  # the same PID namespace: the common case, one read
    if backend_pid in _children_as_they_see_themselves(server_pid):
        return None
    return (
        f"the process listening on the Unix socket (pid {server_pid} here) is not the "
        f"postmaster of the backend that answered (pid {backend_pid} in the server's view)"
    )


def _parent_pid(pid: int) -> int | None:
    """The parent of `pid`, as this machine's /proc tells (None where it cannot be seen)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _children_as_they_see_themselves(pid: int) -> set[int]:
    """The pids of `pid`'s children in their own, innermost PID namespace (NSpid's last field):
    what pg_backend_pid() says in a container. Empty where /proc does not tell."""
    found: set[int] = set()
    try:
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except OSError:
        return found
    for child in children:
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            continue  # ended meanwhile
        for line in status.splitlines():
            if line.startswith("NSpid:"):
                found.add(int(line.split()[-1]))
    return found
