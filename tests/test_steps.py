"""The table of steps and gates (shared/pipeline/steps.py `TABLE`) has the shape a job relies on:
one chain from the first step to `done`, each gate opened by exactly one review step, redo and
after targets that exist, the gates config.py lets APPROVAL_GATES name, and words for each step.
No database: this is the table alone."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.config import GATES
from shared.pipeline.steps import TABLE, step_review
from shared.pipeline.table import DONE, Table
from shared.texts import TEXTS

NAMES = [step.name for step in TABLE]


def chain(start: str) -> list[str]:
    """The steps from `start` following `then`, up to `done`; stops at the first repeat."""
    seen: list[str] = []
    name = start
    while name != DONE and name not in seen:
        seen.append(name)
        name = TABLE.next_step(name)
    return seen


def test_a_job_starts_at_the_first_step_and_meets_every_step_once_on_its_way_to_done():
    """A spoken description starts at the table's first step (`transcribe`); a typed one at
    `script`, the step after it (the create statement in queue.sql names both)."""
    assert TABLE.first == "transcribe"
    assert TABLE.next_step(TABLE.first) == "script"
    assert chain(TABLE.first) == NAMES
    assert chain("script") == NAMES[1:]


def test_following_next_from_any_step_ends_at_done_without_a_loop():
    for name in NAMES:
        path = chain(name)
        assert TABLE.next_step(path[-1]) == DONE, f"{name} loops: {path}"
        assert path == NAMES[NAMES.index(name) :]


def test_every_gate_is_opened_by_exactly_one_review_step_and_names_steps_that_exist():
    openers = [step for step in TABLE if step.opens is not None]
    assert [step.opens.name for step in openers] == list(TABLE.gates)
    for step in openers:
        gate = step.opens.name
        assert step.run is step_review
        assert TABLE.review_of(gate) == step.name
        assert TABLE.gate_of(step.name) is step.opens
        assert TABLE.step_after_gate(gate) in NAMES
        assert TABLE.redo_of(gate) in NAMES
    assert all(step.run is not step_review for step in TABLE if step.opens is None)


def test_a_regenerate_goes_back_before_its_gate_and_approval_goes_past_it():
    for gate in TABLE.gates:
        review = NAMES.index(TABLE.review_of(gate))
        assert NAMES.index(TABLE.redo_of(gate)) <= review
        assert NAMES.index(TABLE.step_after_gate(gate)) == review + 1


def test_the_table_has_the_gates_approval_gates_may_name():
    assert TABLE.gates == GATES


def test_each_artifact_is_made_by_one_step_that_runs_before_any_step_that_reads_it():
    prefixes = [prefix for step in TABLE for prefix in step.makes]
    assert len(prefixes) == len(set(prefixes))
    assert {TABLE.maker_of(prefix) for prefix in ("voice/", "image/", "clip/", "out/")} == {
        "media",
        "animate",
        "render",
    }
    assert NAMES.index(TABLE.maker_of("image/")) < NAMES.index(TABLE.review_of("images"))
    assert NAMES.index(TABLE.maker_of("clip/")) < NAMES.index(TABLE.review_of("videos"))
    assert NAMES.index(TABLE.review_of("videos")) < NAMES.index(TABLE.maker_of("out/"))


def test_the_clips_are_made_after_the_images_gate_and_redone_by_the_videos_gate():
    """New stills (a regenerate at `images`) pass through `animate` again; 🔁 at `videos`
    animates again without drawing the stills anew."""
    assert NAMES[NAMES.index("media") :] == [
        "media",
        "review_images",
        "animate",
        "review_videos",
        "render",
        "deliver",
    ]
    assert TABLE.step_after_gate("images") == "animate"
    assert TABLE.redo_of("videos") == "animate"
    assert TABLE.step_after_gate("videos") == "render"
    assert NAMES.index(TABLE.redo_of("images")) < NAMES.index("animate")


def test_every_step_has_words_for_status_and_for_its_failure_notice():
    for name in NAMES:
        assert f"step_{name}" in TEXTS, name
        assert f"failed_{TABLE.failure_name(name)}" in TEXTS, name
    assert [TABLE.failure_name(name) for name in NAMES if TABLE[name].opens] == list(TABLE.gates)
    assert TABLE.failure_name("no such step") == "no such step"


@given(
    gates_on=st.sets(st.sampled_from(GATES)),
    decisions=st.lists(st.booleans(), max_size=12),
    start=st.sampled_from(NAMES),
)
def test_any_run_of_decisions_reaches_done_and_a_regenerate_meets_its_gate_again(
    gates_on: set[str], decisions: list[bool], start: str
):
    """Walk a job through the table: at each gate that is on, take the next decision
    (True approves, False regenerates; approve once they run out)."""
    pending = list(decisions)
    name, moves, awaiting = start, 0, None
    while name != DONE:
        moves += 1
        assert moves <= len(NAMES) * (len(decisions) + 1), "the walk does not end"
        gate = TABLE[name].opens
        if gate is None or gate.name not in gates_on:
            name = TABLE.next_step(name)
            continue
        assert awaiting in (None, gate.name), f"regenerate at {awaiting} met {gate.name} first"
        approved = pending.pop(0) if pending else True
        awaiting = None if approved else gate.name
        name = gate.redoes if not approved else TABLE.step_after_gate(gate.name)
    assert awaiting is None


def test_a_step_or_a_gate_named_twice_is_refused():
    review = TABLE[TABLE.review_of("script")]
    with pytest.raises(ValueError):
        Table(*TABLE, TABLE[TABLE.first])
    with pytest.raises(ValueError):
        Table(*TABLE, replace(review, name="review_script_again"))
