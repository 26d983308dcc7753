"""`tiny.launch.run_training`: verl's file-logger lines reach `on_record` while the command
runs, each once and whole, the last ones after it ends; its output goes to the log file."""

import os
import sys
import time

import pytest

from oar_verl.tiny.launch import read_metrics, run_training

# Writes one logger line, then half of the next (no newline) and waits, then the rest and a
# last line just before it exits; prints to stdout.
TRAINING = """
import json, os, time
path = os.environ["VERL_FILE_LOGGER_PATH"]
with open(path, "wb", buffering=0) as f:
    f.write(json.dumps({"step": 0, "data": {"acc": 0.5}}).encode() + b"\\n")
    line = json.dumps({"step": 1, "data": {"reward": 0.25}}).encode() + b"\\n"
    f.write(line[:10])
    time.sleep(0.5)
    f.write(line[10:])
    time.sleep(0.5)
    f.write(json.dumps({"step": 1, "data": {"acc": 0.75}}).encode() + b"\\n")
print("verl says hello")
"""


def test_records_arrive_whole_and_once_while_it_runs(tmp_path):
    seen = []
    result = run_training(
        [sys.executable, "-c", TRAINING],
        tmp_path / "metrics.jsonl",
        tmp_path / "train.log",
        on_record=lambda *record: seen.append(record),
        poll_s=0.05,
    )
    assert result.returncode == 0
    assert seen == [(0, {"acc": 0.5}), (1, {"reward": 0.25}), (1, {"acc": 0.75})]
    assert read_metrics(tmp_path / "metrics.jsonl") == {0: {"acc": 0.5}, 1: {"reward": 0.25, "acc": 0.75}}
    assert (tmp_path / "train.log").read_text() == "verl says hello\n"


def test_an_error_in_the_callback_stops_the_training(tmp_path):
    """As `subprocess.run` does on Ctrl-C: the command does not outlive the call."""

    def fail(step, metrics):
        raise KeyboardInterrupt

    script = "print(os.getpid(), flush=True)" + TRAINING.replace('print("verl says hello")', "time.sleep(60)")
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_training([sys.executable, "-c", "import os\n" + script], tmp_path / "metrics.jsonl", tmp_path / "train.log", on_record=fail, poll_s=0.05)
    assert time.monotonic() - start < 30  # the script sleeps 60 s: not waited for
    pid = int((tmp_path / "train.log").read_text().split()[0])
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)
