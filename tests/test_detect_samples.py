"""Annotated samples (tests/samples/*.eml): each names the incidents it must produce.

A sample's `X-Rolekeeper-Expect:` headers list `RULE EMPLOYEE CLIENT` per incident, or
`none`. The directory is the sample organisation that `rolekeeper demo` imports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rolekeeper.commands.demo import DEMO_CONFIG
from rolekeeper.config import load_settings
from rolekeeper.detect.directory import Directory
from rolekeeper.detect.message import facts_from_bytes
from rolekeeper.detect.rules import evaluate
from rolekeeper.directory.snapshot import load_directory
from rolekeeper.sample import import_sample
from rolekeeper.store.open import open_store

SAMPLES = sorted((Path(__file__).parent / "samples").glob("*.eml"))


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    state = tmp_path_factory.mktemp("org")
    config = state / "rolekeeper.toml"
    config.write_text(DEMO_CONFIG.format(db=state / "rk.db"), encoding="utf-8")
    settings = load_settings(config)
    store = open_store(settings)
    import_sample(store, settings, "test")
    with store.sessions() as session:
        yield load_directory(session, settings)
    store.close()


def expected(raw: bytes) -> set[tuple[str, str, str]]:
    found = set()
    for line in raw.decode("utf-8", "replace").splitlines():
        if not line.strip():
            break
        if line.lower().startswith("x-rolekeeper-expect:"):
            words = line.split(":", 1)[1].split()
            if words != ["none"]:
                found.add((words[0], words[1], words[2]))
    return found


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_sample(sample: Path, directory: Directory) -> None:
    raw = sample.read_bytes()
    want = expected(raw)
    assert want or b"X-Rolekeeper-Expect: none" in raw, "sample without expectations"
    facts = facts_from_bytes(raw, with_body=True)
    got = {
        (f.rule, f.employee.address if f.employee else "-", f.client.crm_id if f.client else "-")
        for f in evaluate(facts, directory)
    }
    assert got == want


def test_every_rule_has_a_sample() -> None:
    from rolekeeper.detect.rules import MESSAGE_RULES

    annotated = {rule for s in SAMPLES for rule, _, _ in expected(s.read_bytes())}
    assert annotated == {rule.name for rule in MESSAGE_RULES}


def test_explain_command(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    demo = subprocess.run(
        [sys.executable, "-m", "rolekeeper", "demo", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "import clients" in demo.stdout
    sample = Path(__file__).parent / "samples" / "r3_personal_cc.eml"
    cmd = [sys.executable, "-m", "rolekeeper", "--config", str(tmp_path / "rolekeeper.toml")]
    text = subprocess.run(
        [*cmd, "explain", str(sample)], capture_output=True, text=True, check=True
    )
    assert "cc:           vanya.p@yandex.ru (personal address of Ivan Petrov)" in text.stdout
    assert "HIT  personal-in-client-thread" in text.stdout
    report = json.loads(
        subprocess.run(
            [*cmd, "explain", str(sample), "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    hits = {r["rule"]: r["incidents"] for r in report["rules"] if r["incidents"]}
    assert hits == {
        "personal-in-client-thread": [
            {
                "employee": "ivan.petrov@acme.example",
                "client": "CRM-1001",
                "segment": "regular",
                "evidence": "Cc: vanya.p@yandex.ru",
            }
        ]
    }
    before = subprocess.run(
        [*cmd, "explain", str(sample), "--as-of", "2001-01-01"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "role, held by nobody" in before.stdout
