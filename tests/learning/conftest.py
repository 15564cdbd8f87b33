import pytest


@pytest.fixture
def artifacts(settings, tmp_path):
    settings.ARTIFACT_DIR = tmp_path / "artifacts"
    return settings.ARTIFACT_DIR
