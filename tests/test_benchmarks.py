"""The GPU benchmark's script runs end to end (on the CPU, with the tiny checkpoint): its figures come from a GPU run."""

from __future__ import annotations

from benchmarks import gpu_model_path


def test_the_gpu_benchmark_runs_every_task_type_and_estimates_the_full_run(capsys):
    gpu_model_path.main(["--tiny", "--queries", "1", "--candidates", "3", "--loop-pairs", "2", "--peak-tflops", "1"])
    lines = capsys.readouterr().out.splitlines()
    table = [line.split()[0] for line in lines[2:-1]]
    assert table == ["T→T", "I→I", "T→I", "T→VD", "I→T", "T→IT", "IT→T", "IT→I", "IT→IT"]
    assert lines[-1].startswith("the full 40-task run (declared queries × depth 100: 25,397,500 pairs) at these rates: ")


def test_the_full_run_estimate_is_the_declared_pairs_at_the_measured_rate():
    """docs/gpu.md's ≈96 GPU-hours: the 25,397,500 pairs of the 40 tasks at 73.4 pairs/s."""
    from mrb.tasks import TaskType

    hours, pairs = gpu_model_path.gpu_hours(dict.fromkeys([t.value for t in TaskType], 73.4))
    assert (pairs, round(hours, 1)) == (25_397_500, 96.1)
    slower_text, _ = gpu_model_path.gpu_hours({t.value: 36.7 if t.value == "t2t" else 73.4 for t in TaskType})
    assert hours < slower_text < 2 * hours  # each task at its own type's rate
