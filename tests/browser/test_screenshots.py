"""Where the browser tests' screenshots go."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif("SCREENSHOTS_DIR" in os.environ, reason="SCREENSHOTS_DIR chooses the folder")
def test_screenshots_go_to_a_temporary_folder_outside_the_checkout(screenshots_dir: Path) -> None:
    assert not screenshots_dir.is_relative_to(ROOT)
