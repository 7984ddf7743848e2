"""A CI-sized slice of the live-server fuzz run (bench/fuzz.py runs 100,000
frames): the server neither crashes nor stalls and still serves its canary."""

from bench import fuzz


def test_fuzzing_the_live_server_crashes_and_stalls_nothing():
    result = fuzz.run(frames=10_000, connections=400, seed=7, timeout=120)
    assert result["frames"] >= 10_000
    assert result["crashes"] == 0, result
    assert result["stalls"] == 0, result
    assert not result["canary_lost"] and result["server_alive_to_the_end"], result
    assert result["clean_exit"], result
