from __future__ import annotations

import socket

from serving.backends.ports import free_port_block


def test_every_port_of_the_block_can_be_bound():
    first = free_port_block(3)
    sockets = [socket.socket() for _ in range(3)]
    try:
        for offset, sock in enumerate(sockets):
            sock.bind(("127.0.0.1", first + offset))
    finally:
        for sock in sockets:
            sock.close()
