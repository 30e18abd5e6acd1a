"""Blocks network access for the test suite and the lessons it starts, so a test can never depend on the network.

pytest's conftest.py calls `block_network()` directly; a lesson run as a subprocess gets this folder on PYTHONPATH
with CURRICULUM_BLOCK_NETWORK=1, and Python imports this file at start-up. Loopback stays open (the distributed
lessons talk to themselves over 127.0.0.1), and so do Unix sockets (DataLoader workers, multiprocessing).
A blocked look-up raises socket.gaierror, exactly what an offline laptop sees, so lessons take their offline path.
"""

import ipaddress
import os
import socket

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _is_local(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]").split("%")[0]
    if host in LOOPBACK_NAMES or host == "":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def block_network() -> None:
    """Patch socket so that anything but loopback fails as if the machine were offline. Idempotent."""
    if getattr(socket, "_curriculum_blocked", False):
        return
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def refuse(what) -> OSError:
        return OSError(f"network blocked by the curriculum test suite: {what}")

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            raise refuse(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            raise refuse(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            raise socket.gaierror(socket.EAI_NONAME, f"network blocked by the curriculum test suite: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.getaddrinfo = getaddrinfo
    socket._curriculum_blocked = True


if os.environ.get("CURRICULUM_BLOCK_NETWORK") == "1":
    block_network()
