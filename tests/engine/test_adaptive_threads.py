"""Adaptive threads (engine/threads.py): decisions from /proc/stat readings worked out by hand,
the bounds (cap, affinity, cgroup quota, a fixed count), and training and inference whose
thread count changes mid-run against fixed-thread runs (real Fashion-MNIST)."""

from __future__ import annotations

import pytest
import torch

import cnnkit.engine.perf as perf
import cnnkit.engine.threads as threads_mod
from cnnkit import create_model
from cnnkit.engine import distributed
from cnnkit.engine.threads import ThreadController, core_limit, cpu_quota
from cnnkit.errors import UsageError
from cnnkit.runs import session
from cnnkit.tasks.classify.task import ClassifyTrainer


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class FakeMachine:
    """A /proc/stat file, a wall clock and this process's CPU clock that the test moves on."""

    def __init__(self, tmp_path, monkeypatch, cpus=(0, 1)):
        self.stat = tmp_path / "stat"
        self.ticks = {cpu: [0, 0] for cpu in cpus}  # busy, idle (USER_HZ ticks)
        self.wall = 100.0
        self.own = 5.0
        self.reads = 0
        self.write()
        monkeypatch.setattr(perf, "PROC_STAT", str(self.stat))
        monkeypatch.setattr(perf.os, "sched_getaffinity", lambda pid: set(cpus), raising=False)
        monkeypatch.setattr(threads_mod, "CGROUP_V2", str(tmp_path / "no-cgroup"))
        monkeypatch.setattr(threads_mod, "CGROUP_V1", (str(tmp_path / "none"), str(tmp_path / "none")))
        real = perf._cpu_times

        def counted(cpus):
            self.reads += 1
            return real(cpus)

        monkeypatch.setattr(perf, "_cpu_times", counted)

    def write(self):
        # user nice system idle iowait irq softirq steal
        lines = [f"cpu{c} {b} 0 0 {i} 0 0 0 0" for c, (b, i) in self.ticks.items()]
        self.stat.write_text("cpu  0 0 0 0 0 0 0 0\n" + "\n".join(lines) + "\nintr 1 2\n")

    def run(self, seconds, busy_cores, own_cores):
        """``seconds`` pass with ``busy_cores`` busy in all (spread evenly), ``own_cores`` of them ours."""
        per_cpu = busy_cores / len(self.ticks)
        for t in self.ticks.values():
            t[0] += round(100 * seconds * per_cpu)
            t[1] += round(100 * seconds * (1 - per_cpu))
        self.wall += seconds
        self.own += own_cores * seconds
        self.write()

    def controller(self, **kw):
        return ThreadController(clock=lambda: self.wall, own_cpu=lambda: self.own, **kw)


def test_threads_follow_other_processes_busy_cores(tmp_path, monkeypatch):
    m = FakeMachine(tmp_path, monkeypatch)
    torch.set_num_threads(2)
    c = m.controller()
    assert c.check() is None  # the first look only takes a reading
    m.run(1.0, busy_cores=2.0, own_cores=1.0)  # a CPU-bound process came: 2 cores busy, 1 of them ours
    assert c.check() == 1 and torch.get_num_threads() == 1
    assert c.others == pytest.approx(1.0)
    m.run(1.0, busy_cores=1.0, own_cores=1.0)  # it left: only our own core is busy
    assert c.check() is None and torch.get_num_threads() == 1  # more threads after two looks
    m.run(1.0, busy_cores=1.0, own_cores=1.0)
    assert c.check() == 2 and torch.get_num_threads() == 2
    # Three competitors share the cores with our two threads: 2 busy, 0.8 of it ours.
    m.run(1.0, busy_cores=2.0, own_cores=0.8)
    assert c.check() == 1 and c.others == pytest.approx(1.2)
    # A third of a core busy elsewhere leaves round(2 - 1/3) = 2 threads' worth free.
    m.run(1.5, busy_cores=1.0 + 1 / 3, own_cores=1.0)
    assert c.check() is None
    m.run(1.5, busy_cores=1.0 + 1 / 3, own_cores=1.0)
    assert c.check() == 2
    assert [(ch["from"], ch["to"]) for ch in c.changes] == [(2, 1), (1, 2), (2, 1), (1, 2)]
    assert c.changes[0]["others"] == 1.0 and c.changes[0]["at_s"] == 1.0
    summary = c.summary()
    assert summary["final"] == 2 and summary["cap"] == 2 and summary["changes"] is c.changes


def test_poll_reads_proc_stat_only_every_interval(tmp_path, monkeypatch):
    m = FakeMachine(tmp_path, monkeypatch)
    c = m.controller(every_s=1.0)
    c.poll()
    assert m.reads == 1
    for _ in range(5):  # steps 0.1 s apart: a clock read each, no file read
        m.run(0.1, busy_cores=1.0, own_cores=1.0)
        c.poll()
    assert m.reads == 1
    m.run(0.6, busy_cores=1.0, own_cores=1.0)
    c.poll()
    assert m.reads == 2
    m.run(0.1, 1.0, 1.0)
    assert c.check() is None and m.reads == 2  # an epoch boundary 0.1 s later: too short a window


def test_cap_affinity_and_cgroup_quota_bound_the_threads(tmp_path, monkeypatch):
    m = FakeMachine(tmp_path, monkeypatch, cpus=(0, 1, 2, 3))
    torch.set_num_threads(1)
    c = m.controller(cap=2, raise_after=1)  # a data-parallel worker's share of 4 cores
    c.check()
    m.run(1.0, busy_cores=1.0, own_cores=1.0)  # 3 cores free
    assert c.check() == 2
    # A cgroup quota of 1.5 cores: at most 2 threads even with 4 CPUs in the mask and no cap.
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    monkeypatch.setattr(threads_mod, "CGROUP_V2", str(quota))
    assert cpu_quota() == 1.5 and core_limit() == 2
    assert m.controller(raise_after=1).limit() == 2
    quota.write_text("max 100000\n")
    assert cpu_quota() is None and core_limit() == 4
    # The affinity mask shrinks to one CPU while 2 threads run: one thread at the next look.
    monkeypatch.setattr(perf.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    m.run(1.0, busy_cores=1.0, own_cores=1.0)
    assert c.check() == 1 and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="cap"):
        ThreadController(cap=0)


def test_a_fixed_thread_count_is_never_adapted(monkeypatch):
    from cnnkit.cli.train import fix_threads

    cpu = torch.device("cpu")
    for name in ("OMP_NUM_THREADS", "CNNKIT_AUTO_THREADS", "CNNKIT_ADAPTIVE_THREADS"):
        monkeypatch.setenv(name, "1")  # each restored as it was after the test
        monkeypatch.delenv(name)
    torch.set_num_threads(1)
    course = session.thread_controller(cpu, pick_threads=False)
    assert course is not None and course.cap == 1  # torch's count (here 1) is the ceiling
    # A resumed course run puts back its saved count; the ceiling is the count before that.
    assert session.thread_controller(cpu, pick_threads=False, ceiling=2).cap == 2
    assert session.thread_controller(cpu).cap == core_limit()  # the fast preset: all usable cores
    assert session.thread_controller(cpu, deterministic=True) is None
    assert session.thread_controller(torch.device("meta")) is None
    monkeypatch.setenv("CNNKIT_ADAPTIVE_THREADS", "0")
    assert session.thread_controller(cpu) is None
    monkeypatch.delenv("CNNKIT_ADAPTIVE_THREADS")
    # `cnnkit train --threads N`: the user's count, set now and fixed for the run.
    monkeypatch.setenv("OMP_NUM_THREADS", "9")  # restored after the test by monkeypatch
    fix_threads(2)
    assert torch.get_num_threads() == 2 and session.thread_controller(cpu) is None
    with pytest.raises(UsageError, match="--threads"):
        fix_threads(0)
    # A count the data-parallel launcher chose is not the user's: each worker adapts it,
    # within its share of the cores.
    monkeypatch.setenv("CNNKIT_AUTO_THREADS", "1")
    monkeypatch.setattr(distributed, "current", lambda: distributed.World(rank=1, size=2, local_size=2))
    worker = session.thread_controller(cpu)
    assert worker is not None and worker.cap == max(1, core_limit() // 2)


def _train(data, schedule=None, threads=1, seed=0):
    """hongong_cnn FP32, 2 epochs of batch 64; ``schedule`` gives other processes' busy cores
    at each look, so that the controller changes the threads mid-run."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    controller = None
    if schedule is not None:
        controller = ThreadController(raise_after=1)
        looks = iter(schedule * 100)
        controller.check = controller.poll = lambda: controller.decide(next(looks))
    trainer = ClassifyTrainer(create_model("hongong_cnn"), threads=controller, divergence=None, seed=seed)
    trainer.fit(data, epochs=2, batch_size=64, verbose=0)
    return trainer, {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_thread_changes_mid_run_change_results_by_float_reordering_only(fashion, monkeypatch):
    monkeypatch.setattr(perf, "usable_cores", lambda: 2)  # two threads to move between, anywhere
    monkeypatch.setattr(threads_mod, "core_limit", lambda: 2)
    train, test = fashion
    data = train.take(320, seed=0)  # 5 steps an epoch
    _, fixed = _train(data, threads=1)
    # A controller that finds one core busy elsewhere keeps 1 thread: bit for bit the same.
    trainer, same = _train(data, schedule=[1.0], threads=1)
    assert trainer.threads.changes == []
    assert all(torch.equal(fixed[k], same[k]) for k in fixed)
    # Other processes come and go: 1 -> 2 -> 1 ... threads between steps and epochs.
    trainer, moved = _train(data, schedule=[1.0, 0.0, 0.0, 1.0], threads=1)
    assert {(ch["from"], ch["to"]) for ch in trainer.threads.changes} == {(2, 1), (1, 2)}
    assert len(trainer.threads.changes) >= 5
    # Within float reordering of the fixed run (CPU sums split over 1 or 2 threads); another
    # seed, the scale of a real difference, is hundreds of times further away.
    diff = max(float((fixed[k] - moved[k]).abs().max()) for k in fixed if fixed[k].is_floating_point())
    _, other_seed = _train(data, threads=1, seed=1)
    far = max(float((fixed[k] - other_seed[k]).abs().max()) for k in fixed if fixed[k].is_floating_point())
    assert diff < 2e-3 and far > 100 * diff
    # Inference whose threads change between batches: the same logits within float32 rounding
    # and the same predictions.
    images = test.take(512, seed=0)
    trainer.threads = None
    torch.set_num_threads(1)
    plain = trainer.logits(images, 64)
    looks = iter([1.0, 0.0] * 10)
    controller = ThreadController(raise_after=1)
    controller.poll = lambda: controller.decide(next(looks))
    trainer.threads = controller
    adapted = trainer.logits(images, 64)
    assert len(controller.changes) >= 7
    torch.testing.assert_close(adapted, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(adapted.argmax(1), plain.argmax(1))


def test_train_run_records_thread_changes_and_threads_flag_fixes_the_count(tmp_path, monkeypatch, capsys):
    import json

    from cnnkit.cli.__main__ import main
    from cnnkit.engine.checkpoint import load_checkpoint

    monkeypatch.delenv("CNNKIT_ADAPTIVE_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # so that the --threads run's setting is undone
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads_mod, "MIN_WINDOW_S", 0.0)  # every epoch's start looks, however short
    monkeypatch.setattr(perf, "busy_between", lambda first, second: 99.0)  # every core busy elsewhere
    argv = ["train", "--epochs", "2", "--limit-train", "256", "--val-fraction", "0.125"]
    argv += ["--limit-test", "64", "--no-progress"]
    torch.set_num_threads(2)
    assert main([*argv, "--out", str(tmp_path / "adaptive")]) == 0
    metrics = json.loads((tmp_path / "adaptive" / "metrics.json").read_text())
    assert metrics["threads"]["changes"][0]["from"] == 2 and metrics["threads"]["final"] == 1
    assert load_checkpoint(tmp_path / "adaptive" / "last.ckpt")["num_threads"] == 1
    torch.set_num_threads(1)
    assert main([*argv, "--threads", "2", "--out", str(tmp_path / "fixed")]) == 0
    assert "threads" not in json.loads((tmp_path / "fixed" / "metrics.json").read_text())
    assert load_checkpoint(tmp_path / "fixed" / "last.ckpt")["num_threads"] == torch.get_num_threads() == 2
    capsys.readouterr()


def test_every_task_run_gets_the_adaptive_threads(monkeypatch, tmp_path):
    """``runs.folder.fit_run`` (the fit of localize, detect, segment and classify runs) gives a
    trainer without a controller the run's own; a deterministic run keeps its count."""
    from cnnkit.runs import folder

    for name in ("OMP_NUM_THREADS", "CNNKIT_AUTO_THREADS", "CNNKIT_ADAPTIVE_THREADS"):
        monkeypatch.setenv(name, "1")
        monkeypatch.delenv(name)
    monkeypatch.setattr(ClassifyTrainer, "fit", lambda self, *a, **k: self.threads)
    trainer = ClassifyTrainer(torch.nn.Linear(2, 2), device="cpu")
    assert trainer.threads is None
    controller = folder.fit_run(trainer, tmp_path, None, None, None, epochs=1, batch_size=1, num_samples=1)
    assert isinstance(controller, ThreadController) and controller.cap == torch.get_num_threads()
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    fixed = ClassifyTrainer(torch.nn.Linear(2, 2), device="cpu")
    assert folder.fit_run(fixed, tmp_path, None, None, None, epochs=1, batch_size=1, num_samples=1) is None
