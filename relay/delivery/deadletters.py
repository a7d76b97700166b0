"""Dead letters in `(failed_at, event_id)` order, paged without sorting.

Dead letters arrive in time order, so keys are appended (a bisect insert for the rare clock step
back); removal only forgets the entry and leaves its key behind, skipped when paging and swept
out once stale keys outnumber live ones. A page is a bisect to the cursor plus `limit` steps.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from .entry import Entry

Key = tuple[float, str]


class _Order:
    __slots__ = ("keys", "stale")

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.stale = 0

    def add(self, key: Key) -> None:
        if not self.keys or key >= self.keys[-1]:
            self.keys.append(key)
        else:
            bisect.insort(self.keys, key)


class DeadLetters:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self._all = _Order()
        self._by_tenant: dict[str, _Order] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self.entries

    def get(self, event_id: str) -> Entry | None:
        return self.entries.get(event_id)

    def add(self, e: Entry) -> None:
        self.entries[e.event_id] = e
        key = (e.failed_at or 0.0, e.event_id)
        self._all.add(key)
        order = self._by_tenant.get(e.tenant_id)
        if order is None:
            order = self._by_tenant[e.tenant_id] = _Order()
        order.add(key)

    def remove(self, event_id: str) -> Entry | None:
        e = self.entries.pop(event_id, None)
        if e is None:
            return None
        for order in (self._all, self._by_tenant.get(e.tenant_id)):
            if order is not None:
                order.stale += 1
                if order.stale > 1024 and order.stale * 2 > len(order.keys):
                    self._sweep(order)
        return e

    def _sweep(self, order: _Order) -> None:
        live = self.entries
        order.keys = [k for k in order.keys if (e := live.get(k[1])) is not None and e.failed_at == k[0]]
        order.stale = 0

    def page(self, tenant_id: str | None, after: Key | None = None) -> Iterator[Entry]:
        """Dead letters after `after` (exclusive), oldest first."""
        order = self._all if tenant_id is None else self._by_tenant.get(tenant_id)
        if order is None:
            return
        keys = order.keys
        i = 0 if after is None else bisect.bisect_right(keys, after)
        live = self.entries
        while i < len(keys):
            at, eid = keys[i]
            i += 1
            e = live.get(eid)
            # A key left behind by a removal, or by an earlier round of a replayed event.
            if e is None or e.failed_at != at or (tenant_id is not None and e.tenant_id != tenant_id):
                continue
            yield e

    def drop_tenant_order(self, tenant_id: str) -> None:
        self._by_tenant.pop(tenant_id, None)
