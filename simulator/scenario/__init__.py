"""YAML scenarios: load (with file:line errors), run each in its own world, report.

A scenario file (schema version 1, documented in ``docs/scenarios.md``)::

    version: 1
    name: Numeric comparison accepted
    world:
      config: {bluetooth: {prompt_timeout: 3s}}      # daemon config overrides
      phones:
        - {id: alice, name: Alice's Pixel, address: "AA:BB:CC:DD:EE:01", passkey: 123456}
    steps:
      - dashboard: open_pairing_window
      - phone: alice
        do: pair
      - expect_signal: Phones1.PairingPrompt
        args: {passkey: 123456}
        within: 3s
        save: prompt
      ...

Every step is a mapping with exactly one *kind* key (``phone``, ``dashboard``, ``bluez``,
``expect_signal``, ``wait`` ...); the other keys are that step's parameters.  The vocabulary is
the :data:`ACTIONS` registry (``registry.py``); ``dashbridge-sim run --list-steps`` prints it.

The runner never sleeps to wait for something: an expectation waits for the daemon's signal (or
a property change, or the fake's record) under its ``within:`` deadline.  Only ``wait:`` (the
tester asked for real time to pass) and ``expect_no_signal`` (absence over a stated period) let
time pass on purpose.

The package, in the order its modules import one another (none imports one further down):

* ``values.py`` — how values and durations are shown, addresses, ``${saved}`` references;
* ``matchers.py`` — what ``args:`` / ``value:`` compare with;
* ``registry.py`` — the step vocabulary (:data:`ACTIONS`, the ``@action`` / ``@value_kind``
  decorators, :class:`Step`, :class:`Param`, :class:`StepFailed`);
* ``schema.py`` — loading a file with file:line errors (the shared typed-YAML reader,
  ``dashbridge.daemon.yamlload``), :class:`Scenario`;
* ``runner.py`` — :class:`Run`, :func:`run_scenario`, the results;
* ``builtin_steps.py`` (time, expectations, the dashboard API, the daemon) and ``steps.py``
  (phones, the fakes' faults, dashboard shortcuts) — the steps, registered on import (below);
* ``workers.py`` — many files, each in a worker process (``-j``);
* ``report.py`` — the text report, JUnit XML, ``--list-steps``;
* ``cli.py`` — choosing files (``--tag``, ``--shard``), ``--keep-on-failure``;
* ``recorder.py`` — :class:`Recorder`: what was done, written as a scenario that replays.
"""

from __future__ import annotations

from . import builtin_steps as builtin_steps
from . import steps as steps  # ... and the capability steps, before anything is loaded
from .builtin_steps import dashboard_call
from .cli import Selection, hold_world, parse_shard, select, tag_filter
from .matchers import OPERATORS, check_matcher, match
from .recorder import Recorder, phone_dict, world_dict
from .registry import ACTIONS, COMMON_STEP_KEYS, KINDS, VALUE_KINDS, Action, Param, Step, StepFailed, action, value_kind
from .report import format_result, junit_xml, summary, vocabulary
from .runner import Narrator, OnFailure, Run, ScenarioResult, StepResult, run_file, run_scenario
from .schema import (
    BACKEND_OPTIONS,
    CONTACT_KEYS,
    DEFAULT_TIMEOUT_S,
    DEFAULT_WITHIN_S,
    MESSAGE_KEYS,
    NAVIGATION_OPTIONS,
    PHONE_SUGAR,
    SCHEMA_VERSIONS,
    TOP_KEYS,
    WORLD_KEYS,
    PhoneSpec,
    Scenario,
    ScenarioError,
    _add_contacts,
    expand,
    library,
    load_file,
    load_world,
    loads,
)
from .values import ADDRESS_RE, SUBST_RE, fmt_duration
from .workers import run_many

__all__ = [
    "ACTIONS",
    "ADDRESS_RE",
    "BACKEND_OPTIONS",
    "COMMON_STEP_KEYS",
    "CONTACT_KEYS",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_WITHIN_S",
    "KINDS",
    "MESSAGE_KEYS",
    "NAVIGATION_OPTIONS",
    "OPERATORS",
    "PHONE_SUGAR",
    "SCHEMA_VERSIONS",
    "SUBST_RE",
    "TOP_KEYS",
    "VALUE_KINDS",
    "WORLD_KEYS",
    "Action",
    "Narrator",
    "OnFailure",
    "Param",
    "PhoneSpec",
    "Recorder",
    "Run",
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "Selection",
    "Step",
    "StepFailed",
    "StepResult",
    "_add_contacts",
    "action",
    "builtin_steps",
    "check_matcher",
    "dashboard_call",
    "expand",
    "fmt_duration",
    "format_result",
    "hold_world",
    "junit_xml",
    "library",
    "load_file",
    "load_world",
    "loads",
    "match",
    "parse_shard",
    "phone_dict",
    "run_file",
    "run_many",
    "run_scenario",
    "select",
    "steps",
    "summary",
    "tag_filter",
    "value_kind",
    "vocabulary",
    "world_dict",
]
