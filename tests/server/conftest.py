"""In-process Falcon TestClient over a manager with the embedded digits and a fake model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from falcon import testing

from edge_runner.config.settings import Settings
from edge_runner.server.app import create_app
from edge_runner.serving.model_manager import ModelManager
from tests.conftest import LOCAL, write_fake_model


@pytest.fixture
def manager(settings: Settings, make_manager: Callable[..., ModelManager]) -> ModelManager:
    write_fake_model(Path(settings.model_repository), "fake")
    manager = make_manager(max_body_bytes=1 << 20)
    manager.load("digits")
    manager.load("fake")
    return manager


@pytest.fixture
def client(manager: ModelManager) -> Iterator[testing.TestClient]:
    yield testing.TestClient(create_app(manager, manager.settings), headers=LOCAL)
