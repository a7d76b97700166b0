"""The shared store on Redis (SPEC §10): keys and Lua scripts (scripts.py), the connection and
every call to the server (redis.py), and the delivery engine that runs on it (redis_engine.py).
The local store is the journal (relay/journal/) behind relay/delivery/engine.py."""
