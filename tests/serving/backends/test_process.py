"""A managed child inherits no descriptor its parent held, also under uvloop (whose `subprocess_exec` ignores
`close_fds`; uvloop's own /dev/null and error pipe still reach the child, harmlessly)."""

from __future__ import annotations

import asyncio
import os

import pytest
import uvloop

from serving.backends.process import ManagedProcess


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_child_inherits_no_parent_descriptor(tmp_path, run):
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)  # like the listening socket BentoML's arbiter passes its worker
    child = ManagedProcess(["sh", "-c", "ls /proc/$$/fd"], dict(os.environ), tmp_path / "child.log")

    async def start_and_wait() -> int:
        await child.start()
        return await child._process.wait()

    try:
        assert run(start_and_wait()) == 0
    finally:
        os.close(read_end)
        os.close(write_end)
    listed = {int(fd) for fd in (tmp_path / "child.log").read_text().split()}
    assert {0, 1, 2} <= listed
    assert write_end not in listed
