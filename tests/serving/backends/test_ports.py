"""Free port blocks for engines started at run time."""

from __future__ import annotations

import socket

from serving.backends.ports import free_port_block


def test_every_port_of_the_block_can_be_bound_and_a_held_block_is_not_handed_out_again():
    first = free_port_block(3)
    sockets = [socket.socket() for _ in range(3)]
    try:
        for offset, sock in enumerate(sockets):
            sock.bind(("127.0.0.1", first + offset))
            sock.listen()
        assert [sock.getsockname()[1] for sock in sockets] == [first, first + 1, first + 2]
        held = {first, first + 1, first + 2}
        for _ in range(20):  # the OS hands out ports near each other: a held one would show up here
            again = free_port_block(3)
            assert held.isdisjoint({again, again + 1, again + 2})
    finally:
        for sock in sockets:
            sock.close()
