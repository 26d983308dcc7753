import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_core_does_not_import_verl():
    code = "import sys, oar_verl.core, oar_verl.demo; bad = [m for m in sys.modules if m == 'verl' or m.startswith('verl.')]; print(bad); sys.exit(1 if bad else 0)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
