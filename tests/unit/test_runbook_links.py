"""Every runbook link leads to a runbook: the alerts' runbook_url under the deploy-time base URL, and every link
of the README and of the documentation pages (the runbooks among them) to a file of the repository (issue 13,
item 6; the pages moved from the README to docs/ in issue 19)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
BASE_TEMPLATE = "{{ $externalLabels.runbook_base_url }}"

# [text](target) and [text](target "title"); images too. Targets with a scheme are not files of ours.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(markdown: str) -> set[str]:
    return {github_anchor(h) for h in _HEADING.findall(_FENCE.sub("", markdown))}


def local_links(markdown_file: Path) -> list[str]:
    """Every link target of the file that is neither a URL with a scheme nor inside a code block."""
    text = _FENCE.sub("", markdown_file.read_text())
    return [t for t in _LINK.findall(text) if not urlsplit(t).scheme]


def runbook_urls() -> dict[str, str]:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]
    return {f"{r['alert']} ({r['labels']['severity']})": r["annotations"]["runbook_url"] for r in rules}


MARKDOWN_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("markdown_file", MARKDOWN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_local_link_of_the_docs_resolves_to_a_file_or_heading(markdown_file: Path) -> None:
    links = local_links(markdown_file)
    if markdown_file.name == "README.md" or markdown_file == ROOT / "docs" / "how-to" / "alerts.md":
        assert any("runbooks/" in link for link in links), f"{markdown_file.name} links no runbook: parser broken?"
    for link in links:
        path, _, fragment = link.partition("#")
        target = (markdown_file.parent / unquote(path)).resolve() if path else markdown_file
        assert target.is_file(), f"{markdown_file.name}: [{link}] leads to {target}, which is no file"
        if fragment and target.suffix == ".md":
            assert fragment in anchors_of(target.read_text()), f"{markdown_file.name}: no heading #{fragment}"


def test_every_alert_links_its_runbook_under_the_deploy_time_base_url() -> None:
    urls = runbook_urls()
    assert urls
    for alert, url in urls.items():
        assert url.startswith(BASE_TEMPLATE + "/"), f"{alert}: {url} does not start with the external label"
        page = url.removeprefix(BASE_TEMPLATE + "/")
        assert (RUNBOOKS / page).is_file(), f"{alert}: docs/runbooks/{page} is missing"


def test_the_prometheus_config_sets_the_runbook_base_from_the_environment() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["global"]["external_labels"]["runbook_base_url"] == "${RUNBOOK_BASE_URL}"


def test_the_compose_default_base_url_opens_this_checkouts_runbooks() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prometheus = compose["services"]["prometheus"]
    assert "--enable-feature=expand-external-labels" in prometheus["command"]
    default = prometheus["environment"]["RUNBOOK_BASE_URL"]
    # The default names the runbooks' folder of this repository: a path from its root (what compose files are
    # relative to), or the same under file://${PWD}/ when compose is run from the root.
    match = re.fullmatch(r"\$\{RUNBOOK_BASE_URL:-(?:file://\$\{PWD\}/)?([^:}]+)\}", default)
    assert match, default
    base = ROOT / match.group(1)
    for alert, url in runbook_urls().items():
        assert (base / url.removeprefix(BASE_TEMPLATE + "/")).is_file(), alert


def test_the_link_parser_sees_local_links_and_skips_urls_and_code() -> None:
    sample = ROOT / "README.md"
    text = '[a](docs/x.md) [b](https://example.com/y.md) ![c](img.png "t") [d](#the-flow)\n```\n[e](code.md)\n```\n'
    found = [t for t in _LINK.findall(_FENCE.sub("", text)) if not urlsplit(t).scheme]
    assert found == ["docs/x.md", "img.png", "#the-flow"]
    assert "the-flow" in anchors_of(sample.read_text())
    assert github_anchor("Payment providers: the sandbox and Stripe") == "payment-providers-the-sandbox-and-stripe"


def test_the_runbooks_page_of_the_site_links_every_alerts_runbook() -> None:
    links = local_links(ROOT / "docs" / "how-to" / "runbooks.md")
    for alert, url in runbook_urls().items():
        page = url.removeprefix(BASE_TEMPLATE + "/")
        assert f"../runbooks/{page}" in links, f"{alert}: docs/how-to/runbooks.md does not link {page}"
