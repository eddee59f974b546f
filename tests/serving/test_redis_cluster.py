"""The Redis backend on a real 3-master Redis Cluster: an entity's keys share a slot, the table spreads
over every master, and a whole load through ``open_store`` serves what a single server serves.
(The conformance contract runs on the cluster too: tests/serving/test_store_conformance.py.)"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from recsys_lib.online import Layer, key_of
from recsys_lib.online.redis import RedisStore, tagged, untagged

pytestmark = pytest.mark.serving


@given(st.lists(st.text(), min_size=1, max_size=3))
def test_a_tagged_key_decodes_to_itself(values):
    key = key_of(values)
    assert untagged(tagged(key)) == key


def test_the_tag_is_the_first_value_unless_a_brace_makes_it_ambiguous():
    assert tagged("u1") == "{u1}" and tagged(key_of(["u1", "c3"])) == "{u1}\x1fc3"
    assert tagged("a{b}") == "{}a{b}" and tagged(key_of(["", "c3"])) == "{}\x1fc3"


@pytest.fixture
def cluster_store(redis_cluster):
    store = RedisStore(redis_cluster.url, namespace=f"c{uuid.uuid4().hex[:8]}", grace=0.0, cluster=True)
    yield store
    store.clear()
    store.close()


def test_one_users_rows_and_purchases_share_a_slot_and_the_table_spreads_over_every_master(cluster_store):
    store = cluster_store
    users = [f"user-{i}" for i in range(200)]
    store.write("user_features", Layer.BASE, [(u, u.encode(), None) for u in users], 1)
    store.write("user_category_features", Layer.BASE, [(key_of([u, "shoes"]), b"c", None) for u in users], 1)
    store.add_purchases([(u, "i1") for u in users], 1)
    gen = store.generation()
    for u in users[:20]:
        slots = {key_slot(name.encode()) for name in (store._row_key(gen, "user_features", u),
                                                       store._row_key(gen, "user_category_features",
                                                                      key_of([u, "shoes"])),
                                                       store._buy_key(u))}
        assert len(slots) == 1, (u, slots)

    per_master = [node.dbsize() for node in store._nodes()]
    assert len(per_master) == 3 and all(n > 0 for n in per_master), per_master
    assert sum(per_master) >= 3 * len(users)  # nothing lost to a wrong slot (plus the namespace's own keys)
    assert [r.base for r in store.read("user_features", users)] == [u.encode() for u in users]
    assert sorted(k for k, _ in store.scan("user_category_features")) == sorted(key_of([u, "shoes"]) for u in users)
    assert store.stats()["rows"] == {"user_features": 200, "user_category_features": 200}


def test_a_node_that_lost_the_write_script_gets_it_again(cluster_store, caplog):
    store = cluster_store
    store.write("user_features", Layer.BASE, [(f"u{i}", b"a", None) for i in range(50)], 1)
    for node in store._nodes():  # a restarted master comes back without scripts
        node.script_flush()
    with caplog.at_level("WARNING"):
        written = store.write("user_features", Layer.BASE, [(f"u{i}", b"b", None) for i in range(50)], 2)
    assert written == 50 and "lost the write script" in caplog.text
    assert {r.base for r in store.read("user_features", [f"u{i}" for i in range(50)])} == {b"b"}
