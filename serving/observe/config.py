"""`prometheus.yml` for scraping one servekit server, with servekit's rule files."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml

RULES_DIR = Path(__file__).resolve().parent / "rules"
JOB_NAME = "servekit"


def rule_files() -> list[Path]:
    """The rule files shipped with servekit (recording rules and alerts)."""
    return sorted(RULES_DIR.glob("*.rules.yml"))


def render_config(target_url: str, scrape_interval: str) -> str:
    """Prometheus config scraping `target_url`/metrics every `scrape_interval`; rules evaluate at the same
    pace so recorded series are as fresh as the scrape."""
    target = urlsplit(target_url)
    if not target.scheme or not target.netloc:
        raise ValueError(f"not an absolute URL: {target_url!r}")
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(path) for path in rule_files()],
        "scrape_configs": [
            {
                "job_name": JOB_NAME,
                "scheme": target.scheme,
                "metrics_path": f"{target.path.rstrip('/')}/metrics",
                "static_configs": [{"targets": [target.netloc]}],
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_config(directory: Path, target_url: str, scrape_interval: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "prometheus.yml"
    path.write_text(render_config(target_url, scrape_interval))
    return path
