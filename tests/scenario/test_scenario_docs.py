"""docs/scenarios.md is enough to write a scenario: it documents every step the runner knows, its
worked example is a library scenario that runs, and the error messages it shows are the runner's."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dashbridge.simulator.scenario import ACTIONS, ScenarioError, loads

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "scenarios.md").read_text()


def _yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC, re.S)


def test_every_step_the_runner_knows_is_documented() -> None:
    missing = []
    for kind, name in ACTIONS:
        if not name:
            if f"`{kind}" not in DOC:
                missing.append(kind)
        elif f"`{name}`" not in DOC and f"`{kind}: {name}`" not in DOC:
            missing.append(f"{kind}: {name}")
    assert not missing, f"docs/scenarios.md does not document: {missing}"


def test_the_worked_example_is_the_library_scenario() -> None:
    example = next(b for b in _yaml_blocks() if b.startswith("version: 1"))
    library = (ROOT / "simulator" / "scenarios" / "pairing_just_works.yaml").read_text()
    assert yaml.safe_load(example) == yaml.safe_load(library)
    loads(example, "example.yaml")


def test_every_library_file_is_listed_in_the_docs() -> None:
    for f in sorted((ROOT / "simulator" / "scenarios").glob("*.yaml")):
        assert f"`{f.name}`" in DOC, f"{f.name} is not in the library table of docs/scenarios.md"


def test_the_error_messages_shown_are_the_runners() -> None:
    head = "version: 1\nname: x\nworld:\n  phones:\n    - {id: alice, name: A, address: 'AA:BB:CC:DD:EE:01'}\n"
    cases = {
        "dashboard answer_prompt: unknown parameter acept (known: accept, value, prompt, expect_error, say)":
            head + "steps:\n  - dashboard: answer_prompt\n    acept: true\n",
        'phone: no phone with id "bob" in world.phones (ids: alice)':
            head + "steps:\n  - phone: bob\n    do: pair\n",
        "org.dashbridge.Phones1 has no signal PairingFinishd (it has: DeviceFound, PairingFinished,":
            head + "steps:\n  - expect_signal: Phones1.PairingFinishd\n",
    }
    for shown, text in cases.items():
        try:
            loads(text, "pairing.yaml")
        except ScenarioError as exc:
            assert shown in exc.message, exc.message
            assert shown.split(" (")[0] in DOC
        else:
            raise AssertionError(f"no error for {shown}")
