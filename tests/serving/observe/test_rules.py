from __future__ import annotations

import subprocess
from pathlib import Path

from serving.observe.config import rule_files

RULES_TEST = Path(__file__).with_name("rules_test.yml")


def test_rule_files_pass_promtool_check(promtool):
    files = rule_files()
    assert [path.name for path in files] == ["servekit.rules.yml"]
    result = subprocess.run([promtool, "check", "rules", *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_recording_and_alert_rules_pass_their_unit_tests(promtool):
    """Input series -> expected recorded values, alerts firing and not firing (see rules_test.yml)."""
    result = subprocess.run([promtool, "test", "rules", str(RULES_TEST)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
