"""Redis leases: one holder at a time, kept alive by a heartbeat, let go only by their holder.

A lease is a key holding its holder's token with a short time to live; the holder renews it
well inside that time. A holder that dies stops renewing and the key expires. Renewing and
letting go compare the token first (a Lua script, atomically), so a holder whose lease expired
never deletes the next holder's.

Expiry alone cannot tell a dead holder from one that could not reach Redis for a while (Redis
paused, a network hiccup): both look the same once the key is gone. So a run also has a
*beat* that its execution rewrites on every heartbeat; whoever takes a run's lease from an
earlier holder first watches that beat for :data:`TAKEOVER_GRACE_SECONDS` and steps back if
it moves (see :func:`earlier_holder_alive`).
"""

from __future__ import annotations

from typing import Any

import anyio

HEARTBEAT_SECONDS = 0.5
LEASE_TTL_MS = 5_000
TAKEOVER_GRACE_SECONDS = 4 * HEARTBEAT_SECONDS
BEAT_TTL_SECONDS = 24 * 3600

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Lease:
    """One lease on ``key`` for ``token`` (see the module docstring)."""

    def __init__(self, redis: Any, key: str, token: str, ttl_ms: int = LEASE_TTL_MS) -> None:
        self.redis = redis
        self.key = key
        self.token = token
        self.ttl_ms = ttl_ms
        self.held = False

    async def acquire(self) -> bool:
        self.held = bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))
        return self.held

    async def renew(self) -> bool:
        """Keep it (take it again if it expired and nobody took it); False: someone else has it."""
        if await self.redis.eval(_RENEW, 1, self.key, self.token, self.ttl_ms):
            self.held = True
        else:
            await self.acquire()
        return self.held

    async def release(self) -> None:
        if self.held:
            await self.redis.eval(_RELEASE, 1, self.key, self.token)
            self.held = False

    async def holder(self) -> str | None:
        value = await self.redis.get(self.key)
        return None if value is None else value.decode(errors="replace")


async def beat(redis: Any, key: str, token: str, count: int) -> None:
    await redis.set(key, f"{token}:{count}", ex=BEAT_TTL_SECONDS)


async def earlier_holder_alive(redis: Any, key: str, token: str) -> bool:
    """Whether another execution still beats on the run (watched for the takeover grace)."""
    first = await redis.get(key)
    if first is None or first.decode(errors="replace").startswith(token + ":"):
        return False
    await anyio.sleep(TAKEOVER_GRACE_SECONDS)
    return bool(await redis.get(key) != first)
