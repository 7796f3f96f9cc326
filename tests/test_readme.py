"""The README opens with the two project commands, and CI runs the second verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_commands_and_ci_agree():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert len(block) == 2 and "chainrule train" in block[0] and "pytest" in block[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert block[1] in ci


def test_import_chainrule_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, chainrule\n"
        "heavy = ('matplotlib', 'typer', 'rich', 'sklearn', 'torch', 'joblib', 'dask', 'safetensors', 'starlette', 'fastapi', 'uvicorn')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
