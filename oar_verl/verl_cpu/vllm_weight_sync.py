"""A weight sync to vLLM that fails ends the run with one clear message instead of hanging.

verl 0.9.1 sends the trainer's weights to its vLLM workers in buckets
(`verl/workers/rollout/vllm_rollout/bucketed_weight_transfer.py`): `BucketedWeightSender`, in
the trainer's worker, sends a bucket and waits on its ZMQ socket for the vLLM worker's
acknowledgement, with no timeout. When loading fails in the vLLM worker
(`BucketedWeightReceiver.receive_weights` raises), no acknowledgement comes and the trainer
waits for ever, holding its memory. The receiver's clean-up meanwhile closes its shared-memory
buffer while the failed bucket's tensors still view it, so vLLM reports `BufferError: cannot
close exported pointers exist` in place of the cause.

On the CPU backend, where the transfer goes through shared memory:
- the sender's socket waits at most `ACK_TIMEOUT_S` for an acknowledgement, then the sync
  raises `WeightSyncError`, which ends the run and points at the vLLM worker's error;
- a receiver failing with an exception leaves the buffer mapped (the sender unlinks the
  segment; the run stops), so vLLM reports the exception itself.
"""

from __future__ import annotations

import functools
import sys

from oar_verl.integration.verl_hooks import HookError

ACK_TIMEOUT_S = 30  # a bucket of a model the CPU trains loads in well under a second
MARK = "_oar_verl_weight_sync"
MODULE = "verl.workers.rollout.vllm_rollout.bucketed_weight_transfer"
# shared-memory buffers of failed syncs, mapped until the process ends (the run stops on a
# failed sync; the sender has unlinked their segments)
LEFT_OPEN: list = []


class WeightSyncError(RuntimeError):
    """The vLLM worker acknowledged no bucket of a weight sync in time."""


def install(module) -> None:
    """Wraps `module`'s sender and receiver (verl's `bucketed_weight_transfer`; idempotent).
    Their private `_init_socket` / `_cleanup` methods are what is wrapped: refused by name if
    this verl lacks them."""
    sender, receiver = module.BucketedWeightSender, module.BucketedWeightReceiver
    for cls, method in ((sender, "_init_socket"), (receiver, "_cleanup")):
        if not callable(getattr(cls, method, None)):
            raise HookError(f"verl's {cls.__name__} has no {method}(): the CPU backend cannot bound its weight sync")
    if getattr(sender.async_send_weights, MARK, False):
        return
    sender._init_socket = marked(with_receive_timeout(sender._init_socket))
    sender.async_send_weights = marked(failing_clearly(sender.async_send_weights))
    receiver._cleanup = marked(keeping_the_cause(receiver._cleanup))


def marked(function):
    setattr(function, MARK, True)
    return function


def with_receive_timeout(init_socket):
    """`init_socket(sender)` whose REQ socket then waits at most `ACK_TIMEOUT_S` per reply."""
    import zmq

    @functools.wraps(init_socket)
    def init_socket_with_timeout(sender) -> None:
        init_socket(sender)
        sender.socket.setsockopt(zmq.RCVTIMEO, ACK_TIMEOUT_S * 1000)

    return init_socket_with_timeout


def failing_clearly(async_send_weights):
    """`async_send_weights(sender, weights)` raising `WeightSyncError` when a reply timed out."""
    import zmq

    @functools.wraps(async_send_weights)
    async def send_weights(sender, weights) -> None:
        try:
            await async_send_weights(sender, weights)
        except zmq.Again:
            raise WeightSyncError(
                f"verl's weight sync to vLLM: the vLLM worker acknowledged no bucket within {ACK_TIMEOUT_S} s, so loading "
                "the weights failed there (vLLM's 'Worker failed with error' above names the cause); the run stops"
            ) from None

    return send_weights


def keeping_the_cause(cleanup):
    """`cleanup(receiver)` that, while an exception propagates, leaves the shared-memory
    buffer open (its views live in the failing frame) instead of raising over the exception."""

    @functools.wraps(cleanup)
    def cleanup_keeping_the_cause(receiver) -> None:
        if sys.exc_info()[1] is not None and receiver.shm is not None:
            LEFT_OPEN.append(receiver.shm)  # closing it when collected would raise the same BufferError
            receiver.shm = None
        cleanup(receiver)

    return cleanup_keeping_the_cause
