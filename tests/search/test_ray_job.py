"""`ray job submit -- nas search ...` on a local `ray start --head` cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.search import load_results

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# A hang guard, not a claim on speed: about a minute alone, it took more than 300 s beside a
# soak's two CPU-burning processes (the head, its dashboard and job agent, then the job's own
# Ray workers all start on two busy cores)
@pytest.mark.timeout(1200)
def test_a_search_submitted_as_a_ray_job_runs_on_the_cluster(search_env, tmp_path) -> None:
    port, dash = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["NAS_CACHE_DIR"] = str(tmp_path / "cache")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}",
         f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=true"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    storage = tmp_path / "job.journal"
    try:
        # Ray 2.60 turns token authentication on; the CLI client reads ~/.ray/auth_token
        submit_env = {**env, "RAY_AUTH_MODE": "token"}
        cmd = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}",
               "--", str(BIN / "nas"), "search", "--space", "tiny",
               "--checkpoint", search_env["checkpoint"], "--data", "digits",
               "-O", "accuracy", "-O", "latency:cpu-1t", "-n", "8", "--workers", "2",
               "--db", search_env["db"], "--study", "job", "--storage", str(storage),
               "--no-progress"]
        # The dashboard's job server, then its job agent, take a while to come up (on a busy
        # machine, a minute): until then a submission is refused before any job exists, with
        # one of these answers, and is tried again.
        not_up = ("Failed to connect", "No available agent to submit job")
        deadline = time.time() + 300
        while True:
            proc = subprocess.run(cmd, env=submit_env, capture_output=True, text=True,
                                  timeout=900)
            if proc.returncode == 0 or time.time() > deadline or "succeeded" in proc.stdout:
                break
            if not any(s in proc.stdout + proc.stderr for s in not_up):
                break
            time.sleep(2)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert "succeeded" in proc.stdout + proc.stderr
        res = load_results("job", str(storage))
        assert len(res.budget_trials) == 8
        assert res.front
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        # `ray start` records its address for later ray.init() calls; the cluster is gone
        current = Path("/tmp/ray/ray_current_cluster")
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()
