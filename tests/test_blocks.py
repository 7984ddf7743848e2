"""Unit tests of blocks.py: both indexes, and forgetting an account."""

from greenchat.server.blocks import Blocks


def test_blocks_both_ways():
    blocks = Blocks([("yoda", "vader"), ("luke", "vader"), ("vader", "luke")])
    assert blocks.blocks("yoda", "vader") and not blocks.blocks("vader", "yoda")
    assert blocks.blockers_of("vader") == {"yoda", "luke"}
    assert blocks.blocking("vader") == {"luke"}
    blocks.remove("yoda", "vader")
    blocks.remove("yoda", "vader")              # twice is harmless
    assert blocks.blockers_of("vader") == {"luke"}
    assert not blocks.blocking("yoda") and not blocks.blockers_of("nobody")


def test_forgetting_a_name_removes_its_blocks_in_both_directions():
    blocks = Blocks([("leia", "han"), ("han", "leia"), ("luke", "leia"), ("luke", "han")])
    blocks.forget("leia")
    assert not blocks.blocking("leia") and not blocks.blockers_of("leia")
    assert blocks.blockers_of("han") == {"luke"}
    assert blocks.blocking("han") == set() and blocks.blocking("luke") == {"han"}
