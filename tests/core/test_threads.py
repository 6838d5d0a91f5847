"""The default thread count: the CPUs the process may use (affinity, cgroup quota)."""

import os

from lwdsl.backend.threads import cgroup_quota, usable_cpus


def test_the_cgroup_v2_quota_caps_the_affinity(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    assert usable_cpus(tmp_path) == 1  # 1.5 CPUs of quota: one thread, not two


def test_no_quota_leaves_the_affinity(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_the_cgroup_v1_quota_is_read_too(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path) == 0.5 and usable_cpus(tmp_path) == 1  # never fewer than one


def test_the_affinity_mask_counts_not_the_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert usable_cpus(tmp_path) == 1


def _in_fresh_python(code: str, **env: str) -> str:
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_idle_openmp_threads_sleep_unless_the_user_chose_a_policy():
    """Set before torch loads its OpenMP runtime (which reads the variable once), never over
    the user's own choice, and said when it came too late."""
    code = ("import os; from lwdsl.backend.threads import quiet_openmp; said = quiet_openmp(); assert quiet_openmp() == said; "
            "import torch; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), '|', said)")
    assert _in_fresh_python(code).startswith("PASSIVE 10000 | OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=10000 (lwdsl's default")
    assert _in_fresh_python(code, OMP_WAIT_POLICY="ACTIVE").startswith("ACTIVE None | OMP_WAIT_POLICY=ACTIVE (set by the user)")
    assert _in_fresh_python(code, GOMP_SPINCOUNT="5").startswith("None 5 | GOMP_SPINCOUNT=5 (set by the user)")
    late = ("import os, torch; torch.ones(2).sum(); from lwdsl.backend.threads import quiet_openmp; said = quiet_openmp(); "
            "print(os.environ.get('OMP_WAIT_POLICY'), '|', said)")
    assert _in_fresh_python(late) == "None | the OpenMP runtime's default (it was loaded before lwdsl could set OMP_WAIT_POLICY)"
