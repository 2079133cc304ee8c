"""Data-parallel training: two gloo processes under ``torchrun`` give the parameters of one
process running the whole batch (adapter with a kill and a resume, steer, two repair methods)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from saelora_core.training import distributed

WORKER = Path(__file__).with_name("distributed_worker.py")


def test_two_gloo_ranks_equal_one_process(tmp_path):
    from tests.training import distributed_worker

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # The workers import this checkout's package, as the test process does.
    root = str(Path(distributed.__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    dp = tmp_path / "dp"
    dp.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = subprocess.run(
        [*cmd, str(WORKER), str(dp)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-4000:]
    ranks = [torch.load(dp / f"params.rank{r}.pt", weights_only=True) for r in (0, 1)]
    single = distributed_worker.run_all(tmp_path / "single")
    assert set(ranks[0]) == set(single)
    for name, want in single.items():
        for r in (0, 1):
            torch.testing.assert_close(ranks[r][name], want, rtol=1e-4, atol=1e-5, msg=name)
    # Rank 0 alone wrote the finished runs, in the single process's layout.
    for sub in ("lora/params.pt", "steer/steer.pt", "latent_adapter/lora/params.pt"):
        assert (dp / sub).exists() and (tmp_path / "single" / sub).exists()


def test_one_process_helpers_are_the_identity():
    assert not distributed.active()
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.share([1, 2, 3]) == [1, 2, 3]
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    [s] = distributed.all_reduce_grads_([p], torch.tensor(1.5))
    assert p.grad.tolist() == [2.0, 2.0, 2.0] and s.item() == 1.5
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}


def test_init_from_env_outside_torchrun_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() is False
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_from_env() is False
