"""The baseline cache is lwdsl's own: a damaged file in it is trained again, with a warning."""

import lwdsl

RUN = dict(data="synthetic:1,8,8:3", quiet=True, latency=False, baseline_epochs=1)


def test_a_damaged_cached_baseline_is_trained_again_with_a_warning(tmp_path, monkeypatch, backend_name):
    monkeypatch.setenv("LWDSL_CACHE", str(tmp_path / "cache"))
    first = lwdsl.run("prune l1 0.5", "lenet300", backend=backend_name, **RUN)
    cached = next((tmp_path / "cache" / "baselines").glob("*.lwz"))
    good = cached.read_bytes()
    cached.write_bytes(good[: len(good) // 2])  # truncated
    again = lwdsl.run("prune l1 0.5", "lenet300", backend=backend_name, **RUN)
    warned = again.report["steps"][0].get("warnings", [])
    assert any(str(cached) in w and "trained again" in w for w in warned)
    assert again.report["steps"][0]["metrics"]["accuracy"] == first.report["steps"][0]["metrics"]["accuracy"]  # same seed, same baseline
    assert cached.read_bytes() != good[: len(good) // 2]  # replaced by a good file
