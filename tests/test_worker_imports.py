"""Worker processes do not load the web framework: FastAPI and Starlette cost every worker about
12 MB of memory (docs/performance.md, the scoring worker's peak during a rebuild); nor httpx's
command line (click, rich, pygments: about 4 MB, kept out by `services/__init__.py`)."""

import subprocess
import sys

import pytest

WORKERS = ["services.scoring.worker", "services.ranking.worker", "services.notify.worker", "services.intake.relay"]


@pytest.mark.parametrize("module", WORKERS)
def test_a_worker_imports_no_web_framework_nor_command_line_tools(module):
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & "
                               "{'fastapi', 'starlette', 'uvicorn', 'click', 'rich', 'pygments'}))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", f"{module} loads {loaded}"
