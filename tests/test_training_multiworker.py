"""2 local workers under MultiWorkerMirroredStrategy == 1 worker with the same global batch."""
import json
import os
import socket

from test_training_resume import (
    assert_same_state,
    checkpoint_values,
    listed_checkpoint,
    popen,
    train_cmd,
    wait,
)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_match_one_worker(tmp_path):
    steps = 3
    # Some gradients are ~0 in exact arithmetic (e.g. attention key biases); Adam's first steps turn their
    # float noise (which depends on the reduction order) into +-lr updates unless epsilon dominates it.
    common = ("--config.training.checkpoint_every=100", "--config.training.adam_epsilon=1e-4")
    single = str(tmp_path / "single")
    multi = str(tmp_path / "multi")
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = [(popen(train_cmd(single, steps, *common), str(tmp_path / "single.log")), "single.log")]
    for i in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        cmd = train_cmd(multi, steps, *common, "--config.training.strategy=multi_worker")
        log = f"worker{i}.log"
        procs.append((popen(cmd, str(tmp_path / log), {"TF_CONFIG": tf_config}), log))
    try:
        for proc, log in procs:
            wait(proc, str(tmp_path / log), timeout=170)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    metrics = json.load(open(os.path.join(multi, "train_metrics.json")))
    assert metrics["step"] == steps and metrics["utts_per_s"] > 0
    assert not [d for d in os.listdir(multi) if d.startswith(".ckpt_tmp")], "worker scratch not removed"
    multi_state = checkpoint_values(listed_checkpoint(multi))
    assert_same_state(multi_state, checkpoint_values(listed_checkpoint(single)), atol=1e-5)
