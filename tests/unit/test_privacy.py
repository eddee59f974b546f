"""Pseudonymous ids (recsys_lib.core.privacy): the keyed hash, the masking of raw lines, the key, redaction."""

from __future__ import annotations

import json
import stat

import pyarrow as pa
import pytest

from recsys_lib.core.config import load_config, redacted
from recsys_lib.core.privacy import (
    KEY_ENV,
    IdKeyError,
    Pseudonyms,
    load_key,
    mask_raw,
    mask_raw_arrow,
    pseudonyms_for,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("key", "data", "digest"), [  # RFC 4231, test cases 2 and 6 (a key longer than a block)
    (b"Jefe", "what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 131, "Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
])
def test_the_pseudonym_is_hmac_sha256_cut_to_128_bits(key, data, digest):
    ids = Pseudonyms(key)
    assert ids.of(data) == digest[:32]
    assert ids.arrow(pa.array([data, None, data])).to_pylist() == [digest[:32], None, digest[:32]]


@pytest.mark.parametrize(("line", "masked"), [
    ('{"event_id": "e1", "user_id": "alice@example.com", "x": 1}', '{"event_id": "e1", "user_id": "***", "x": 1}'),
    ('{"user_id":12345,"event_type":"view"}', '{"user_id":"***","event_type":"view"}'),
    ('{"user_id" : "a \\"quoted\\" name"}', '{"user_id" : "***"}'),
    ('{"user_id": null}', '{"user_id": "***"}'),
    ('{"user_id": "bob", "event_ts": ', '{"user_id": "***", "event_ts": '),  # a line cut short
    ('not json, no id', 'not json, no id'),
])
def test_a_raw_line_keeps_everything_but_the_user_id(line, masked):
    assert mask_raw(line) == masked
    assert mask_raw_arrow(pa.array([line])).to_pylist() == [masked]


def test_the_key_comes_from_the_environment_or_a_file_made_once(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    made = load_key(None, str(tmp_path))
    path = tmp_path / "secrets" / "id.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(made) == 64
    assert load_key(None, str(tmp_path)) == made  # read again, not made again
    monkeypatch.setenv(KEY_ENV, "k" * 40)
    assert load_key(str(path), str(tmp_path)) == b"k" * 40  # the environment wins
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(IdKeyError, match=r"\$RECSYS_ID_KEY has 5 characters; at least 32"):
        load_key(None, str(tmp_path))


def test_pseudonyms_can_be_turned_off_and_are_never_in_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "s" * 32)
    on = load_config(overrides=[f"home={tmp_path}"])
    assert pseudonyms_for(on) == Pseudonyms(b"s" * 32)
    assert pseudonyms_for(load_config(overrides=[f"home={tmp_path}", "privacy.pseudonymize=false"])) is None
    assert "s" * 32 not in json.dumps(redacted(on))


def test_the_printed_config_hides_storage_secrets_and_url_passwords(tmp_path):
    cfg = load_config(overrides=[f"home={tmp_path}", "lake.storage_options.AWS_SECRET_ACCESS_KEY=abc123",
                                 "lake.storage_options.AWS_REGION=eu-west-1",
                                 "online.redis_url=redis://user:hunter2@cache:6379/0"])
    shown = redacted(cfg)
    assert shown["lake"]["storage_options"] == {"AWS_SECRET_ACCESS_KEY": "***", "AWS_REGION": "eu-west-1"}
    assert shown["online"]["redis_url"] == "redis://user:***@cache:6379/0"
    assert "abc123" not in json.dumps(shown) and "hunter2" not in json.dumps(shown)
