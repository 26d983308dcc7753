"""vLLM's shared-memory queues leave no `/dev/shm` segment behind in a CPU-backend run.

vLLM's multiprocess executor talks to its worker through `MessageQueue`s, each a ring
buffer in a `multiprocessing.shared_memory` segment (`/dev/shm/psm_*`: 160 MiB for the
broadcast queue, 240 MiB for the worker's response queue in vLLM 0.24), which its creator
unlinks in `ShmRingBuffer.__del__`. verl ends its vLLM servers by killing their processes,
so the segments outlive every run (about 400 MB of `/dev/shm` a run on a machine whose
`/dev/shm` is a RAM disk).

Here the creator unlinks the segment's name as soon as every local reader has attached
(`MessageQueue.wait_until_ready`: a reader maps the segment before it subscribes, and the
writer returns only after each reader's subscription), as POSIX shared memory allows: the
mapping stays valid in every process that holds it, and the memory is freed when the last
one exits, however it exits. No reader attaches later in vLLM's executors.
"""

from __future__ import annotations

import functools
import logging

MARK = "_oar_verl_unlinks_when_ready"

logger = logging.getLogger("oar_verl")


def install() -> None:
    """Wraps `MessageQueue.wait_until_ready` (once) so that the writer unlinks its segment."""
    from vllm.distributed.device_communicators.shm_broadcast import MessageQueue

    if not getattr(MessageQueue.wait_until_ready, MARK, False):
        MessageQueue.wait_until_ready = unlinking_when_ready(MessageQueue.wait_until_ready)


def unlinking_when_ready(wait_until_ready):
    """`wait_until_ready(queue)` that then unlinks the queue's segment if this process created it."""

    @functools.wraps(wait_until_ready)
    def wait_then_unlink(queue) -> None:
        wait_until_ready(queue)
        buffer = getattr(queue, "buffer", None)  # None: no local reader, no segment
        if buffer is not None and buffer.is_creator:  # the writer's own segment (a reader's is not)
            name = buffer.shared_memory.name
            buffer.shared_memory.unlink()
            buffer.is_creator = False  # its __del__ would unlink the name again
            logger.info("oar_verl: vLLM shared-memory queue %s unlinked, its readers attached", name)

    setattr(wait_then_unlink, MARK, True)
    return wait_then_unlink
