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


# ---- every number the README states is one the suite measures ----------------------------
# The tests that measure a number compare it with the README through readme_number(); the
# patterns below are the README's sentences, so rewording one without its test fails here.

QUICK_LAB = r"`chainrule lab --quick` takes about (\d+) s"
DEFAULT_ACCURACY = r"about ([\d.]+)% test accuracy"
TEST_COUNT = r"about ([\d,]+) tests"


def readme_number(pattern: str) -> float:
    """The number that the README states where ``pattern`` (one group) matches; exactly one match."""
    found = re.findall(pattern, (ROOT / "README.md").read_text())
    assert len(found) == 1, f"the README should state {pattern!r} once, found {found}"
    return float(found[0].replace(",", ""))


def test_the_test_count_in_the_readme_is_what_pytest_collects():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    collected = int(re.search(r"(\d+) tests? collected", proc.stdout).group(1))
    stated = readme_number(TEST_COUNT)
    assert abs(stated - collected) <= 0.05 * collected, f"the README says about {stated:.0f} tests; pytest collects {collected}"
