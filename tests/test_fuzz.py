"""A CI-sized slice of the live-server fuzz run (bench/fuzz.py runs 100,000
frames): in both phases, with every flood of issue 11 item 1 beside the mix,
the server neither crashes nor stalls and still serves its canary."""

from bench import fuzz


def test_fuzzing_the_live_server_crashes_and_stalls_nothing():
    result = fuzz.run(frames=40_000, connections=1600, seed=7, timeout=120)
    assert result["frames"] >= 40_000
    assert result["crashes"] == 0, result
    assert result["stalls"] == 0, result
    assert not result["canary_lost"] and result["server_alive_to_the_end"], result
    assert result["clean_exit"], result
    limited, unlimited = result["phases"]["limited"], result["phases"]["unlimited"]
    assert set(limited["classes"]) == {"mix", "blank", "whitespace", "spaces", "probes"}
    assert set(unlimited["classes"]) == {"mix", "blank", "whitespace", "spaces", "commands"}
    for phase in (limited, unlimited):
        assert all(c["frames"] > 0 for c in phase["classes"].values()), result
    # The server dropped every blank flood and, at its command rate, the
    # probe flood, so their connections came back.
    for kind in fuzz.BLANK_FLOODS:
        assert limited["classes"][kind]["connections"] \
            + unlimited["classes"][kind]["connections"] > 2 * fuzz.FLOOD_WORKERS, result
    assert limited["classes"]["probes"]["connections"] > fuzz.FLOOD_WORKERS, result
