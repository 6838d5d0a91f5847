"""Training threads: the runner sets them on the backend before any model is built, records them
in the report and the lock file, and puts the caller's count back after the run."""

import json

import lwdsl
from lwdsl.backend import get_backend
from lwdsl.backend.threads import usable_cpus

RUN = dict(data="synthetic:1,8,8:3", quiet=True, latency=False, baseline_epochs=1)


def test_training_threads_are_set_recorded_and_restored(tmp_path, backend_name, monkeypatch):
    cls = type(get_backend(backend_name))
    before = cls().get_threads()
    seen, real = [], cls.set_threads
    monkeypatch.setattr(cls, "set_threads", lambda self, n: seen.append(n) or real(self, n))
    result = lwdsl.run("prune l1 0.5", "lenet300", backend=backend_name, out=tmp_path / "run", train_threads=1, **RUN)
    assert seen[0] == 1 and seen[-1] == before  # set first, put back last
    lock = json.loads((tmp_path / "run" / "lwdsl.lock.json").read_text())
    threads = result.report["threads"]
    assert lock["threads"] == threads and threads["latency"] == 1
    assert "OMP_WAIT_POLICY" in threads["idle_threads"] or "default" in threads["idle_threads"]  # how idle threads wait, said
    if threads["training"] != 1:  # TensorFlow fixed its pool when this process first used it: said, not hidden
        assert threads["training_asked"] == 1
        assert any("thread" in w for w in result.report["steps"][0].get("warnings", []))


def test_the_default_is_the_cpus_this_process_may_use(backend_name):
    result = lwdsl.run("prune l1 0.5", "lenet300", backend=backend_name, **RUN)
    threads = result.report["threads"]
    assert threads.get("training_asked", threads["training"]) == usable_cpus()

