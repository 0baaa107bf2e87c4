"""The ROS-free tests and the image conversions under Humble's and Jazzy's Python, numpy, OpenCV and
scipy (Ubuntu 22.04 / 24.04 apt versions), in virtualenvs of their own that
scripts/check_distro_pythons.sh builds once in .venv-compat/ (about 20 s and 0.56 GB each from a
warm pip cache) and reuses; the tests themselves take seconds. README, "Which ROS distros are
checked, and how".

Needs Python 3.10 and 3.12 next to the project's (pyenv has them on the project's machines): where
one is missing the test is skipped, except in CI (CI=true), where that is a failure.
"""
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_distro_pythons.sh"


@pytest.mark.slow
@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_ros_free_tests_pass_under_the_distros_python_stack(distro):
    proc = subprocess.run(["bash", str(SCRIPT), distro], cwd=REPO, capture_output=True, text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    if proc.returncode == 3:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must check {distro}'s Python stack:\n{out[-2000:]}")
        pytest.skip(out.strip().splitlines()[-1])
    assert proc.returncode == 0, out[-6000:]
    # The versions the issue names really were the ones tested.
    expected = {"humble": "Python 3.10.", "jazzy": "Python 3.12."}[distro]
    versions = {"humble": "numpy 1.21.5, OpenCV 4.5.4, scipy 1.8.0", "jazzy": "numpy 1.26.4, OpenCV 4.6.0, scipy 1.11.4"}
    line = next(line for line in out.splitlines() if line.startswith(f"check_distro_pythons: {distro}: Python"))
    assert expected in line and versions[distro] in line, line
    assert " passed" in out and " failed" not in out, out[-3000:]
