"""The two-tower model: hand-computed loss, save/reload, warm start growth."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.tf

tf = pytest.importorskip("recsys_lib.models.two_tower", reason="TensorFlow is not installed").tf


def test_retrieval_loss_matches_hand_computation():
    from recsys_lib.models.two_tower import build
    from tests.tf.helpers import tiny_spec

    task = build(tiny_spec(temperature=0.5)).task
    q = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    c = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    p = tf.constant([0.5, 0.25])
    # logits = q.c / T - log p: row 0 [2 + ln 2, ln 4], row 1 [ln 2, 2 + ln 4]
    row0 = math.log(1 + math.exp(math.log(4) - (2 + math.log(2))))
    row1 = math.log(1 + math.exp(math.log(2) - (2 + math.log(4))))
    loss = task(q, c, candidate_sampling_probability=p, candidate_ids=tf.constant(["a", "b"]),
                compute_metrics=False)
    assert float(loss) == pytest.approx(row0 + row1, rel=1e-5)


def test_accidental_hits_are_not_negatives():
    from recsys_lib.models.two_tower import build
    from tests.tf.helpers import tiny_spec

    task = build(tiny_spec(temperature=0.5)).task
    q = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    c = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    # both rows have the same item: each row's only negative is its own positive -> zero loss
    loss = task(q, c, candidate_sampling_probability=tf.constant([0.5, 0.5]), candidate_ids=tf.constant(["a", "a"]),
                compute_metrics=False)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def _one_step(spec):
    from recsys_lib.core.config import TrainConfig
    from recsys_lib.models.data import ItemPrior, candidate_chunk, query_chunk
    from recsys_lib.models.trainer import fit
    from tests.tf.helpers import rows

    table = rows(64)
    prior = ItemPrior.from_counts({i: 1 for i in spec.items})

    def make(worker, workers):
        def gen():
            chunk = query_chunk(table, spec) | candidate_chunk(table, spec)
            chunk["item_prob"] = prior.lookup(chunk["item_id"])
            yield chunk
        return gen

    return fit(spec, make, 64, TrainConfig(batch_size=32, epochs=1, shuffle_buffer=64)), table


def test_train_save_reload_gives_identical_scores(tmp_path):
    from recsys_lib.models.bundle import Bundle, save_bundle
    from recsys_lib.models.data import candidate_chunk, encode, query_chunk
    from recsys_lib.models.index import BruteForceIndex
    from tests.tf.helpers import tiny_spec

    spec = tiny_spec()
    result, table = _one_step(spec)
    assert result.epochs and math.isfinite(result.epochs[0]["loss"])
    model = result.model
    q = encode(model.query, query_chunk(table, spec))
    items = table.select(["item_id", "category_id", "price", "i_view_count"]).to_pandas()
    c = encode(model.candidate, candidate_chunk(table, spec))
    save_bundle(tmp_path / "b", model, items, c, BruteForceIndex(c), {"cutoff": "x"})
    again = Bundle(tmp_path / "b")
    np.testing.assert_array_equal(encode(again.model.query, query_chunk(table, again.spec)), q)
    np.testing.assert_array_equal(encode(again.model.candidate, candidate_chunk(table, again.spec)), c)
    np.testing.assert_allclose(again.encode_queries(table), q, rtol=1e-6, atol=1e-6)  # the exported SavedModel
    np.testing.assert_allclose(again.encode_queries(table) @ c.T, q @ c.T, rtol=1e-5, atol=1e-6)


def test_warm_start_keeps_old_embeddings_and_grows_vocabularies():
    from recsys_lib.models.two_tower import build, load_weights, weight_arrays
    from tests.tf.helpers import ITEMS, USERS, tiny_spec

    old_spec = tiny_spec()
    old, _ = _one_step(old_spec)
    saved = weight_arrays(old.model)
    grown = old_spec.grown(USERS + ["u_new"], ITEMS + ["i_new"], {"i_new": "c9"}, ["c0", "c1", "c9"])
    assert grown.users[: len(USERS)] == USERS and grown.users[-1] == "u_new"
    assert grown.items[-1] == "i_new" and grown.item_categories[-1] == "c9"
    model = build(grown)
    assert load_weights(model, saved) == []
    for name in ("user_embedding/embeddings:0", "item_embedding/embeddings:0", "category_embedding/embeddings:0"):
        new = weight_arrays(model)[name]
        assert new.shape[0] > saved[name].shape[0]
        np.testing.assert_array_equal(new[: saved[name].shape[0]], saved[name])
    # an old id still maps to the same row
    assert int(model.item_lookup(tf.constant(["i3"]))[0]) == int(old.model.item_lookup(tf.constant(["i3"]))[0])


def test_unseen_user_still_gets_an_embedding():
    import pyarrow as pa

    from recsys_lib.models.data import encode, query_chunk
    from tests.tf.helpers import rows, tiny_spec

    spec = tiny_spec()
    result, _ = _one_step(spec)
    model = result.model
    assert "nobody" not in spec.users
    assert int(model.user_lookup(tf.constant(["nobody"]))[0]) < spec.oov_buckets  # an OOV row, no known user's
    base = rows(2)  # two rows with different recent items, categories and counts
    unseen = encode(model.query, query_chunk(base.set_column(1, "user_id", pa.array(["nobody", "nobody"])), spec))
    assert np.isfinite(unseen).all()
    assert not np.allclose(unseen[0], unseen[1])  # an unseen user's embedding follows their features
    known = encode(model.query, query_chunk(base.set_column(1, "user_id", pa.array([spec.users[0]] * 2)), spec))
    assert not np.allclose(known[0], unseen[0])  # and a known id adds its own embedding to the same features


def test_forgetting_a_user_scrubs_the_bundle_and_its_exported_tower(tmp_path):
    import pyarrow as pa

    from recsys_lib.models.bundle import Bundle, save_bundle
    from recsys_lib.models.data import candidate_chunk, encode, query_chunk
    from recsys_lib.models.index import BruteForceIndex
    from recsys_lib.models.scrub import bundle_folders, scrub_bundle
    from tests.tf.helpers import tiny_spec

    spec = tiny_spec(users=["alice-7f3a", "bob-91c4", "carol-5d2e"])
    result, table = _one_step(spec)
    items = table.select(["item_id", "category_id", "price", "i_view_count"]).to_pandas()
    c = encode(result.model.candidate, candidate_chunk(table, spec))
    folder = save_bundle(tmp_path / "mlflow" / "run" / "bundle", result.model, items, c, BruteForceIndex(c), {})
    rows = table.slice(0, 4)
    as_user = {u: rows.set_column(1, "user_id", pa.array([u] * 4)) for u in spec.users}
    before = {u: Bundle(folder).encode_queries(t) for u, t in as_user.items()}
    tower = b"".join(p.read_bytes() for p in (folder / "query_tower").rglob("*") if p.is_file())
    assert b"bob-91c4" in tower  # the SavedModel holds the vocabulary: the scan below can find it

    assert bundle_folders(tmp_path) == [folder]
    assert scrub_bundle(folder, ["bob-91c4", "nobody"]) == 1
    assert scrub_bundle(folder, ["bob-91c4"]) == 0  # a re-run finds nothing left
    after = Bundle(folder)
    assert after.spec.users == ["alice-7f3a", "<forgotten-1>", "carol-5d2e"]
    row = spec.oov_buckets + 1
    assert not after.weights["user_embedding/embeddings:0"][row].any()
    held = [p for p in folder.rglob("*") if p.is_file() and b"bob-91c4" in p.read_bytes()]
    assert held == []
    for user in ("alice-7f3a", "carol-5d2e"):  # everyone else is served as before
        np.testing.assert_allclose(after.encode_queries(as_user[user]), before[user], rtol=1e-6, atol=1e-6)
    forgotten = after.encode_queries(as_user["bob-91c4"])
    assert not np.allclose(forgotten, before["bob-91c4"])
    # the exported tower and the rebuilt model agree: bob is now an unknown user (an OOV row)
    np.testing.assert_allclose(forgotten, encode(after.model.query, query_chunk(as_user["bob-91c4"], after.spec)),
                               rtol=1e-5, atol=1e-6)
    assert int(after.model.user_lookup(tf.constant(["bob-91c4"]))[0]) < spec.oov_buckets
