"""The layering of STYLE.md, checked with import-linter (services never import each other), and ruff."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    result = subprocess.run([Path(sys.executable).parent / "lint-imports", "--config", str(ROOT / "pyproject.toml")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and "0 broken" in result.stdout


def test_ruff_finds_nothing():
    """pyflakes, pycodestyle and import order (`[tool.ruff.lint]` in pyproject.toml; `make lint`)."""
    result = subprocess.run([Path(sys.executable).parent / "ruff", "check", "--no-cache", "--output-format", "concise",
                             str(ROOT)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
