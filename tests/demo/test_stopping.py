"""Every way a demo ends stops everything it started: Ctrl-C sent to the whole process
group of a demo whose stdout is a pipe, SIGHUP, and the reader of its stdout going away
(SIGTERM, and a demo running beside another one, are in test_demo.py).  Each run is small
(2 nodes x 2 GPUs) and is stopped while a Slurm job of another user is running, so the
job's processes are part of what must go."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.conftest import free_port
from tests.demo import run as demo_run

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the demo's Slurm cluster needs root")]


def _stop_by(how: str, demo: demo_run.DemoRun) -> None:
    if how == "ctrl-c to the process group":
        os.killpg(demo.proc.pid, signal.SIGINT)
    elif how == "sighup":
        demo.proc.send_signal(signal.SIGHUP)
    else:
        demo.close_stdout()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("how", ["ctrl-c to the process group", "sighup", "closed stdout"])
def test_the_demo_stops_everything_it_started(tmp_path, how):
    demo = demo_run.start(tmp_path / "gwhome", free_port(), "--nodes", "2",
                          "--gpus-per-node", "2")
    try:
        demo.started()
        demo.wait_for(r"job \d+ llm-pretrain submitted as alice")
        deadline = time.monotonic() + 30
        while not demo_run.job_processes(demo.home) and time.monotonic() < deadline:
            demo.read(0.2)
        assert demo_run.job_processes(demo.home), "no job process to stop\n" + demo.log()
        _stop_by(how, demo)
        code = demo.finish(timeout=60)
        if how != "closed stdout":  # nobody reads its last words then
            assert "stopped; nothing is left running" in demo.out, demo.log()
            assert code == 0, demo.log()
            # quiet: one line per step, none per job process
            assert "orphan" not in demo.out and "leftover" not in demo.out, demo.out
        assert "Traceback" not in demo.stderr.read_text(), demo.log()
        demo_run.assert_nothing_left(demo)
    finally:
        demo.kill()
