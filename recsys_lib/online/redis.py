"""The online store on Redis (redis-py with hiredis): one server, or a Redis Cluster.

Keys (``ns`` is ``online.namespace``; ``{...}`` is a Redis hash tag, which picks the cluster slot):

* ``{ns}:gen``: the active generation; ``{ns}:generations``: hash generation -> time it was
  replaced ("" while active or loading); ``{ns}:applied:<gen>``: hash table -> version;
  ``{ns}:meta``: the purchases version and the watermark. All on one slot, so that activating a
  generation is one transaction on a cluster too.
* ``ns:<gen>:<table>:{<entity>}<rest>``: one hash per entity row with fields ``b``/``bv`` (base
  layer and its version) and ``p``/``pv`` (pending layer and its version). The tag is the key's
  first value (the user of a user×category row), so one user's rows of every table and generation,
  and ``ns:buy:{<user>}`` (the set of purchased item ids), share a slot: one node answers a request.
  A key holding a brace is stored as ``{}<key>`` (Redis then hashes the whole name).

Writes go through one Lua script per chunk of rows, which applies the version guard
and the expiry on the server, so a check and its write cannot interleave with
another writer's. On a cluster a script's keys must share a slot, so a chunk holds one slot's
rows and the pipeline sends each node its own. Reads are one pipelined round trip on the cached
active generation plus ``GET {ns}:gen``; if the generation moved, the read is repeated on
the new one. A replaced generation stays for ``online.generation_grace``, so a read
on the old one still sees a complete generation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import msgpack
import redis
from redis.crc import key_slot

from recsys_lib.online.base import (
    Layer,
    OnlineStore,
    OnlineStoreError,
    StoredRow,
    StoreUnavailable,
    Write,
    expiry_ms,
)

log = logging.getLogger(__name__)

_WRITE = """
local layer = ARGV[1]
local vf = layer .. 'v'
local v = tonumber(ARGV[2])
local fresh = ARGV[3] == '1'
local rows = cmsgpack.unpack(ARGV[4])
local n = 0
for i = 1, #KEYS do
  local val = rows[2 * i - 1]
  local ex = rows[2 * i]
  local cur = -1
  if not fresh then cur = tonumber(redis.call('HGET', KEYS[i], vf) or '-1') end
  if v > cur then
    if val == '' then
      redis.call('HDEL', KEYS[i], layer)
      redis.call('HSET', KEYS[i], vf, ARGV[2])
    else
      redis.call('HSET', KEYS[i], layer, val, vf, ARGV[2])
    end
    if ex > 0 then
      local t = redis.call('PEXPIRETIME', KEYS[i])
      if t < ex then redis.call('PEXPIREAT', KEYS[i], ex) end
    end
    n = n + 1
  end
end
return n
"""
_SET_MAX = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""
_CHUNK = 1000
_FIELDS = ("b", "bv", "p", "pv")


class RedisStore(OnlineStore):
    """The online store on one Redis server, or on a Redis Cluster (``cluster=True``: ``url`` names any node)."""

    backend = "redis"

    def __init__(self, url: str, *, namespace: str = "recsys", grace: float = 60.0, timeout: float = 5.0,
                 cluster: bool = False) -> None:
        self.url, self.ns, self.grace, self.cluster = url, namespace, grace, cluster
        # short timeouts: a reader that cannot reach Redis answers from its fallback instead of waiting
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        self.client: Any = (redis.RedisCluster.from_url(url, **options) if cluster
                            else redis.Redis.from_url(url, health_check_interval=30, **options))
        self._write = self.client.register_script(_WRITE)
        self._set_max = self.client.register_script(_SET_MAX)
        self._scripts_loaded = False
        self._gen_cache: int | None = None

    def _run(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"online store (redis {self.url}): {what} failed: {exc}") from exc
        except redis.RedisError as exc:
            raise OnlineStoreError(f"online store (redis {self.url}): {what} failed: {exc}") from exc

    def _row_key(self, gen: int, table: str, key: str) -> str:
        return f"{self.ns}:{gen}:{table}:{tagged(key)}"

    def _meta(self, name: str) -> str:
        return f"{{{self.ns}}}:{name}"

    def _buy_key(self, user: str) -> str:
        return f"{self.ns}:buy:{tagged(user)}"

    def _nodes(self) -> list[redis.Redis]:
        """A client per primary: the server, or each of the cluster's masters."""
        if not self.cluster:
            return [self.client]
        return [self.client.get_redis_connection(node) for node in self.client.get_primaries()]

    # -- features -------------------------------------------------------------------------------
    def write(self, table: str, layer: Layer, rows: Sequence[Write], version: int, *,
              generation: int | None = None, fresh: bool = False) -> int:
        def run() -> int:
            gen = self.generation() if generation is None else generation
            keyed = [(self._row_key(gen, table, k), value, expire_at) for k, value, expire_at in rows]
            if self.cluster:  # a script's keys must share a slot: one group per slot
                self._load_scripts()
                by_slot: dict[int, list[tuple[str, bytes | None, float | None]]] = {}
                for row in keyed:
                    by_slot.setdefault(key_slot(row[0].encode()), []).append(row)
                groups: list[list[tuple[str, bytes | None, float | None]]] = list(by_slot.values())
            else:
                groups = [keyed]
            pipe = self.client.pipeline(transaction=False)
            for group in groups:
                for start in range(0, len(group), _CHUNK):
                    chunk = group[start:start + _CHUNK]
                    # the values and expiries travel as one msgpack argument (unpacked by the script):
                    # redis-py encodes each argument in Python, which cost more than the server's work
                    flat: list[Any] = []
                    for _key, value, expire_at in chunk:
                        flat += [b"" if value is None else value, expiry_ms(expire_at)]
                    # (str types: Redis 7.0's cmsgpack reads no bin types; Lua strings hold any bytes)
                    args = [layer.value, version, "1" if fresh else "0", msgpack.packb(flat, use_bin_type=False)]
                    self._write(keys=[k for k, _v, _e in chunk], args=args, client=pipe)
            return sum(int(n) for n in pipe.execute())
        try:
            return int(self._run(f"write {table}", run))
        except OnlineStoreError as exc:  # a cluster node without the script (restarted, or new): load, write again
            if not (self.cluster and isinstance(exc.__cause__, redis.exceptions.NoScriptError)):
                raise
            log.warning("online store (redis cluster %s): a node had lost the write script; loading it again (%s)",
                        self.url, exc)
            self._scripts_loaded = False
            return int(self._run(f"write {table}", run))

    def _load_scripts(self) -> None:
        """Load the scripts on every primary (a cluster pipeline sends EVALSHA without loading them)."""
        if not self._scripts_loaded:
            for source in (_WRITE, _SET_MAX):
                self.client.script_load(source)
            self._scripts_loaded = True

    def read(self, table: str, keys: Sequence[str]) -> list[StoredRow | None]:
        def run() -> list[StoredRow | None]:
            for _ in range(3):
                gen = self._gen_cache if self._gen_cache is not None else self.generation()
                pipe = self.client.pipeline(transaction=False)
                pipe.get(self._meta("gen"))
                for k in keys:
                    pipe.hmget(self._row_key(gen, table, k), *_FIELDS)
                now_gen, *found = pipe.execute()
                active = int(now_gen or 0)
                if active == gen:
                    return [_row(f) for f in found]
                self._gen_cache = active  # the generation moved: read again on the new one
            raise OnlineStoreError(f"online store (redis {self.url}): the generation kept moving during a read")
        return list(self._run(f"read {table}", run))

    def scan(self, table: str, generation: int | None = None) -> Iterator[tuple[str, StoredRow]]:
        gen = self.generation() if generation is None else generation
        prefix = f"{self.ns}:{gen}:{table}:"
        keys = self._run(f"scan {table}", lambda: [k.decode() for k in self.client.scan_iter(
            match=f"{_escape(prefix)}*", count=5000)])
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            pipe = self.client.pipeline(transaction=False)
            for k in chunk:
                pipe.hmget(k, *_FIELDS)
            for k, fields in zip(chunk, self._run(f"scan {table}", pipe.execute), strict=True):
                row = _row(fields)
                if row is not None:
                    yield untagged(k[len(prefix):]), row

    def delete_keys(self, table: str, keys: Sequence[str]) -> int:
        def run() -> int:
            gens = [int(g) for g in self.client.hkeys(self._meta("generations"))] or [self.generation()]
            names = [self._row_key(g, table, k) for g in gens for k in keys]
            return int(self.client.unlink(*names)) if names else 0
        return int(self._run(f"delete from {table}", run))

    def forget_purchases(self, users: Sequence[str]) -> int:
        names = [self._buy_key(u) for u in users]
        return int(self._run("forget purchases", lambda: self.client.unlink(*names) if names else 0))

    def erase_freed(self) -> None:
        """Rewrite the servers' persistence files, so that deleted rows leave their RDB and AOF too.

        On each primary (the server, or every master of a cluster): with RDB snapshots configured
        (``save`` not empty) this runs ``BGSAVE``; with AOF on, ``BGREWRITEAOF``; and waits for each
        to finish. A server that hides ``CONFIG`` (some managed services) is logged at WARNING: its
        files keep the rows until its next rewrite. Replicas and backups taken earlier are the
        operator's to rotate.
        """
        def run() -> None:
            for node in self._nodes():
                try:
                    saves = node.config_get("save").get("save", "")
                    aof = node.config_get("appendonly").get("appendonly", "no")
                except redis.ResponseError as exc:
                    log.warning("online store (redis %s): CONFIG is not allowed (%s); its RDB/AOF files keep "
                                "forgotten rows until the server rewrites them", self.url, exc)
                    continue
                if saves:
                    self._rewrite(node, "bgsave", ("rdb_bgsave_in_progress",), "rdb_last_bgsave_status")
                if aof == "yes":  # (scheduled: it starts once a running BGSAVE ends)
                    self._rewrite(node, "bgrewriteaof", ("aof_rewrite_in_progress", "aof_rewrite_scheduled"),
                                  "aof_last_bgrewrite_status")
        self._run("rewrite the persistence files", run)

    def _rewrite(self, node: redis.Redis, command: str, running: tuple[str, ...], status: str,
                 timeout: float = 600.0) -> None:
        """Start ``command`` on ``node`` (retrying while another rewrite runs) and wait until it reports it done."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                node.execute_command(command)
                break
            except redis.ResponseError as exc:  # "... already in progress": start ours once that one ends
                if "progress" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        while any(int(node.info("persistence").get(flag, 0)) for flag in running):
            if time.monotonic() > deadline:
                raise OnlineStoreError(f"online store (redis {self.url}): {command} still running after "
                                       f"{timeout:.0f} s")
            time.sleep(0.05)
        if node.info("persistence").get(status) != "ok":
            raise OnlineStoreError(f"online store (redis {self.url}): {command} failed ({status} is not ok); "
                                   "forgotten rows may remain in its files")

    # -- generations and versions -------------------------------------------------------------
    def generation(self) -> int:
        gen = int(self._run("read the generation", lambda: self.client.get(self._meta("gen"))) or 0)
        self._gen_cache = gen
        return gen

    def new_generation(self) -> int:
        def run() -> int:
            active = self.generation()
            known = self.client.hgetall(self._meta("generations"))
            for g, replaced in known.items():
                if not replaced and int(g) > active:  # a load that died before activating
                    self._drop(int(g))
            gen = int(self.client.incr(self._meta("next_gen")))
            if gen <= active:
                gen = active + 1
                self.client.set(self._meta("next_gen"), gen)
            self.client.hset(self._meta("generations"), str(gen), "")
            return gen
        return int(self._run("allocate a generation", run))

    def activate(self, generation: int) -> None:
        def run() -> None:
            now = time.time()
            old = self.generation()
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self._meta("gen"), generation)
            pipe.hset(self._meta("generations"), mapping={str(old): str(now), str(generation): ""})
            pipe.execute()
            self._gen_cache = generation
            for g, replaced in self.client.hgetall(self._meta("generations")).items():
                if replaced and float(replaced) < now - self.grace and int(g) != generation:
                    self._drop(int(g))
        self._run(f"activate generation {generation}", run)

    def _drop(self, gen: int) -> None:
        batch = []
        for k in self.client.scan_iter(match=f"{_escape(f'{self.ns}:{gen}:')}*", count=5000):
            batch.append(k)
            if len(batch) >= 5000:
                self.client.unlink(*batch)
                batch = []
        if batch:
            self.client.unlink(*batch)
        self.client.delete(self._meta(f"applied:{gen}"))
        self.client.hdel(self._meta("generations"), str(gen))

    def applied_version(self, table: str, generation: int | None = None) -> int:
        gen = self.generation() if generation is None else generation
        value = self._run(f"read the applied version of {table}",
                          lambda: self.client.hget(self._meta(f"applied:{gen}"), table))
        return -1 if value is None else int(value)

    def set_applied(self, table: str, version: int, generation: int | None = None) -> None:
        gen = self.generation() if generation is None else generation
        self._run(f"record the applied version of {table}",
                  lambda: self._set_max(keys=[self._meta(f"applied:{gen}")], args=[table, version]))

    # -- purchases ----------------------------------------------------------------------------
    def add_purchases(self, pairs: Sequence[tuple[str, str]], events_version: int) -> None:
        def run() -> None:
            by_user: dict[str, list[str]] = {}
            for user, item in pairs:
                by_user.setdefault(user, []).append(item)
            pipe = self.client.pipeline(transaction=False)
            for user, items in by_user.items():
                pipe.sadd(self._buy_key(user), *items)
            pipe.execute()
            self._set_max(keys=[self._meta("meta")], args=["purchases_version", events_version])
        self._run("add purchases", run)

    def purchases(self, users: Sequence[str]) -> dict[str, set[str]]:
        def run() -> dict[str, set[str]]:
            pipe = self.client.pipeline(transaction=False)
            for user in users:
                pipe.smembers(self._buy_key(user))
            return {u: {i.decode() for i in items} for u, items in zip(users, pipe.execute(), strict=True) if items}
        return dict(self._run("read purchases", run))

    def purchases_version(self) -> int:
        value = self._run("read the purchases version", lambda: self.client.hget(self._meta("meta"),
                                                                                 "purchases_version"))
        return -1 if value is None else int(value)

    # -- watermark ------------------------------------------------------------------------------
    def raise_watermark(self, micros: int) -> None:
        self._run("raise the watermark", lambda: self._set_max(keys=[self._meta("meta")],
                                                                args=["watermark", int(micros)]))

    def watermark(self) -> int | None:
        value = self._run("read the watermark", lambda: self.client.hget(self._meta("meta"), "watermark"))
        return None if value is None else int(value)

    # -- operations -----------------------------------------------------------------------------
    def ping(self) -> None:
        self._run("ping", self.client.ping)

    def stats(self) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            gen = self.generation()
            rows: dict[str, int] = {}
            for k in self.client.scan_iter(match=f"{_escape(f'{self.ns}:{gen}:')}*", count=5000):
                table = (k.decode() if isinstance(k, bytes) else k).split(":")[2]
                rows[table] = rows.get(table, 0) + 1
            applied = {_text(k): int(v) for k, v in self.client.hgetall(self._meta(f"applied:{gen}")).items()}
            used = sum(int(node.info("memory")["used_memory"]) for node in self._nodes())
            users = sum(1 for _ in self.client.scan_iter(match=f"{_escape(f'{self.ns}:buy:')}*", count=5000))
            return {"backend": self.backend, "url": _redact(self.url), "cluster": self.cluster,
                    "generation": gen,
                    "generations": sorted(int(g) for g in self.client.hkeys(self._meta("generations"))),
                    "rows": rows, "applied_versions": applied, "bytes": used,
                    "purchases_users": users, "purchases_version": self.purchases_version()}
        return dict(self._run("stats", run))

    def clear(self) -> None:
        def run() -> None:
            batch = [k for pattern in (self.ns + ":", self._meta(""))
                     for k in self.client.scan_iter(match=f"{_escape(pattern)}*", count=5000)]
            for start in range(0, len(batch), 5000):
                self.client.unlink(*batch[start:start + 5000])
            self._gen_cache = None
        self._run("clear", run)

    def close(self) -> None:
        self.client.close()


def _row(fields: Sequence[Any]) -> StoredRow | None:
    b, bv, p, pv = fields
    if b is None and p is None:
        return None
    return StoredRow(b, int(bv) if bv is not None else -1, p, int(pv) if pv is not None else -1)


def tagged(key: str) -> str:
    """``key`` with its first value as a hash tag (``u1<US>c3`` -> ``{u1}<US>c3``); ``{}key`` if it has a brace."""
    if "{" in key or "}" in key:
        return "{}" + key
    tag = key.split("\x1f", 1)[0]
    return f"{{{tag}}}{key[len(tag):]}" if tag else "{}" + key


def untagged(name: str) -> str:
    """The key :func:`tagged` made ``name`` from."""
    if name.startswith("{}"):
        return name[2:]
    end = name.index("}")
    return name[1:end] + name[end + 1:]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _escape(pattern: str) -> str:
    """``pattern`` with Redis glob characters escaped."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in pattern)


def _redact(url: str) -> str:
    """The URL without a password."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
