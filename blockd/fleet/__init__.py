"""The fleet: resolvers sharing verified list versions over Redis, never trusting it.

One node at a time, the syncer, holds a lease in Redis (`lease`) and runs the ordinary
feed sync; each version it accepts is published to Redis with a notification (`bus`).
Every node (`node`) reads the versions from Redis and applies them through the policy
holder's apply seam, which verifies them against the node's own pinned trust policy:
Redis carries envelopes, it decides nothing. Each node records what it enforces in a
heartbeat that `blockd fleet status`, `blockd fleet audit` (`status`, `commands`) and the
admin API read.
"""
