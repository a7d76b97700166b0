from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Daemon, Sink


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink().start()
    yield s
    s.stop()


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def factory(**kw: Any) -> Daemon:
        d = Daemon(tmp_path, **kw)
        started.append(d)
        return d

    yield factory
    for d in started:
        d.__exit__(None, None, None)
