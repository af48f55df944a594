"""settle_heap runs in a child interpreter: it changes the collector of the whole process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHECK = textwrap.dedent(
    """
    import gc, weakref
    from serving.heap import YOUNG_THRESHOLD, settle_heap

    class Node:
        pass

    def cycle():
        node = Node()
        node.self = node
        return weakref.ref(node)

    startup_garbage = cycle()
    settle_heap()
    assert startup_garbage() is None, "garbage from before serving was collected, not frozen"
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    frozen = gc.get_freeze_count()
    later_garbage = cycle()
    gc.collect()
    assert later_garbage() is None, "garbage made while serving is still collected"
    assert gc.get_freeze_count() == frozen
    print(frozen)
    """
)


def test_settle_heap_freezes_the_startup_heap_and_still_collects_later_garbage():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 1_000  # the interpreter and its imports, now skipped by every collection
