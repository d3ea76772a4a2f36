"""The config checks know every prompt and music a routing node names (issue 5 follow-up).

A menu greeting, an announcement, a queue's announcements and music, a hunt group's music
and the closing announcement must exist in the library the core would load for the
config's language: the shipped one and, given a data folder, the uploads in it. A missing
name is reported with where it is, the key, the name and close names of the library;
without a data folder the message says only the shipped library was looked at. Without a
library to look at (`sounds` not given) nothing is said, as before.
"""

from __future__ import annotations

import asyncio
import typing
from pathlib import Path

import numpy as np
import pytest

from firmware.config.load import ConfigError, parse_config
from firmware.config.routing_schema import Node
from firmware.config.schema import Config
from firmware.features.graph import SOUND_KEYS, check_graph, check_sound_names
from firmware.media.prompt_library import checking_prompts, known_sounds
from firmware.media.prompts import PromptKey, store
from tests.features.feature_tools import office_with_routing

ROUTING = """
[routing]
unanswered_prompt = "{unanswered}"

[[routing.nodes]]
name = "main"
kind = "menu"
greeting = "{greeting}"
invalid_prompt = "{invalid}"
keys = {{ "1" = "support", "2" = "sales", "3" = "closed" }}

[[routing.nodes]]
name = "support"
kind = "queue"
agents = ["202", "203"]
entry_prompt = "{entry}"
comfort_prompt = "{comfort}"
music = "{queue_music}"

[[routing.nodes]]
name = "sales"
kind = "hunt_group"
members = ["204", "205"]
caller_hears = "{hears}"
music = "{hunt_music}"

[[routing.nodes]]
name = "closed"
kind = "announcement"
prompt = "{closed}"
"""

SHIPPED = {
    "unanswered": "cannot_answer_now",
    "greeting": "enter_extension",
    "invalid": "invalid_option",
    "entry": "all_operators_busy",
    "comfort": "please_hold",
    "queue_music": "default",
    "hears": "music",
    "hunt_music": "default",
    "closed": "office_closed",
}


def office(extra: str = "", **names: str) -> Config:
    """The default office with city1 sent to a menu, a queue, a hunt group, an announcement."""
    return parse_config(office_with_routing(ROUTING.format(**(SHIPPED | names)), extra=extra))


def upload(data_dir: Path, key: PromptKey) -> None:
    store(data_dir / "prompts", key, np.full(800, 1000, dtype=np.int16))


def test_names_of_the_shipped_library_pass_without_a_data_folder() -> None:
    config = office()
    assert list(check_sound_names(config, known_sounds(config, None))) == []
    assert list(check_graph(config, known_sounds(config, None))) == []


@pytest.mark.parametrize(
    ("field", "name", "where"),
    [
        ("greeting", "welcome_to_acme", "routing.nodes[0] (main).greeting"),
        ("invalid", "invalid_choice", "routing.nodes[0] (main).invalid_prompt"),
        ("entry", "all_busy", "routing.nodes[1] (support).entry_prompt"),
        ("comfort", "please_hlod", "routing.nodes[1] (support).comfort_prompt"),
        ("closed", "office_closd", "routing.nodes[3] (closed).prompt"),
        ("unanswered", "cannot_answer", "routing.unanswered_prompt"),
    ],
)
def test_a_missing_prompt_is_named_with_its_node_and_key(field: str, name: str, where: str) -> None:
    config = office(**{field: name})
    problems = list(check_graph(config, known_sounds(config, None)))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{where}: no prompt {name!r} in the shipped English library")
    assert "no data folder given" in problems[0] and "--data-dir" in problems[0]
    assert f"minipbx prompt add {name} FILE.wav" in problems[0]


def test_close_names_of_the_library_are_suggested() -> None:
    config = office(greeting="ofice_closed", comfort="please_hlod")
    problems = list(check_sound_names(config, known_sounds(config, None)))
    assert "close: 'office_closed'" in problems[0]
    assert "close: 'please_hold'" in problems[1]
    config = office(greeting="zzzz")
    (problem,) = check_sound_names(config, known_sounds(config, None))
    assert "no close name (`minipbx prompt list` shows them all)" in problem


def test_missing_music_of_a_queue_and_of_a_hunt_group_playing_music() -> None:
    config = office(queue_music="jazz", hunt_music="defualt")
    problems = list(check_sound_names(config, known_sounds(config, None)))
    assert [p.split(":")[0] for p in problems] == [
        "routing.nodes[1] (support).music",
        "routing.nodes[2] (sales).music",
    ]
    assert "no music 'jazz' in the shipped English library" in problems[0]
    assert "close: 'default'" in problems[1]
    assert "minipbx prompt add defualt FILE.wav --music" in problems[1]


def test_a_hunt_group_giving_ringback_plays_no_music_so_its_music_is_not_checked() -> None:
    config = office(hears="ringback", hunt_music="jazz")
    assert list(check_sound_names(config, known_sounds(config, None))) == []


def test_a_prompt_named_as_music_and_music_as_a_prompt_say_which_it_is() -> None:
    config = office(queue_music="please_hold", greeting="default")
    problems = list(check_sound_names(config, known_sounds(config, None)))
    assert "'default' is music, not prompt" in problems[0]
    assert "'please_hold' is a prompt, not music" in problems[1]


def test_queue_announcements_set_to_none_are_not_checked() -> None:
    config = office()
    nodes = list(config.routing.nodes)
    nodes[1] = nodes[1].model_copy(update={"entry_prompt": None, "comfort_prompt": None})
    routing = config.routing.model_copy(update={"nodes": tuple(nodes)})
    quiet = config.model_copy(update={"routing": routing})
    assert list(check_sound_names(quiet, known_sounds(quiet, None))) == []


def test_uploads_count_with_the_data_folder_and_not_without(tmp_path: Path) -> None:
    upload(tmp_path, PromptKey("welcome_to_acme"))
    upload(tmp_path, PromptKey("jazz", music=True))
    config = office(greeting="welcome_to_acme", queue_music="jazz")
    assert list(check_graph(config, known_sounds(config, tmp_path))) == []
    problems = list(check_graph(config, known_sounds(config, None)))
    assert len(problems) == 2
    assert all("no data folder given" in p for p in problems)


def test_with_a_data_folder_the_message_names_the_uploads_folder(tmp_path: Path) -> None:
    config = office(greeting="welcome_to_acme")
    (problem,) = check_sound_names(config, known_sounds(config, tmp_path))
    assert problem.startswith(
        f"routing.nodes[0] (main).greeting: no prompt 'welcome_to_acme' for English, shipped "
        f"or uploaded to {tmp_path / 'prompts'}"
    )
    assert "no data folder" not in problem


def test_the_configured_prompts_folder_is_the_one_looked_at(tmp_path: Path) -> None:
    store(tmp_path / "greetings", PromptKey("welcome_to_acme"), np.full(800, 9, dtype=np.int16))
    config = office('[prompts]\nfolder = "greetings"\n', greeting="welcome_to_acme")
    assert list(check_sound_names(config, known_sounds(config, tmp_path))) == []


def test_an_upload_for_another_language_does_not_count(tmp_path: Path) -> None:
    upload(tmp_path, PromptKey("welcome_to_acme", language="pt"))
    english = office(greeting="welcome_to_acme")
    assert len(list(check_sound_names(english, known_sounds(english, tmp_path)))) == 1
    portuguese = office('[prompts]\nlanguage = "pt"\n', greeting="welcome_to_acme")
    sounds = known_sounds(portuguese, tmp_path)
    assert sounds.language == "pt"
    assert list(check_sound_names(portuguese, sounds)) == []


def test_without_a_library_to_look_at_prompt_names_are_not_checked() -> None:
    """Loading a config for `prompt add` must not need the prompt it is about to add."""
    config = office(greeting="welcome_to_acme", queue_music="jazz")
    assert list(check_graph(config)) == []


def test_every_schema_key_that_names_a_sound_is_checked() -> None:
    """A new prompt or music key on a node kind must be added to SOUND_KEYS too."""
    for model in typing.get_args(typing.get_args(Node)[0]):
        (kind,) = typing.get_args(model.model_fields["kind"].annotation)
        names_sound = {
            key
            for key in model.model_fields
            if any(word in key for word in ("prompt", "greeting", "music", "sound"))
        }
        assert names_sound == {key for key, _ in SOUND_KEYS.get(kind, ())}, kind


# ----- validation inside checking_prompts (check-config, reload) ------------------------------


def office_text(**names: str) -> str:
    return office_with_routing(ROUTING.format(**(SHIPPED | names)))


def test_validation_inside_checking_prompts_refuses_a_missing_prompt() -> None:
    text = office_text(greeting="welcome_to_acme")
    parse_config(text)  # outside: not checked
    with checking_prompts(None), pytest.raises(ConfigError) as refused:
        parse_config(text, "office.toml")
    (problem,) = refused.value.errors
    assert problem.startswith("routing.nodes[0] (main).greeting: no prompt 'welcome_to_acme'")
    assert "no data folder given" in problem


def test_validation_inside_checking_prompts_with_the_data_folder_sees_uploads(
    tmp_path: Path,
) -> None:
    upload(tmp_path, PromptKey("welcome_to_acme"))
    with checking_prompts(tmp_path):
        config = parse_config(office_text(greeting="welcome_to_acme"))
    assert config.routing.nodes[0].greeting == "welcome_to_acme"


def test_one_pass_shows_a_missing_prompt_with_the_schema_errors() -> None:
    text = office_text(greeting="welcome_to_acme").replace('name = "closed"', 'name = "closed"\nrepeat = 0')
    with checking_prompts(None), pytest.raises(ConfigError) as refused:
        parse_config(text)
    assert any(e.startswith("routing.nodes[3].announcement.repeat") for e in refused.value.errors)
    assert any("no prompt 'welcome_to_acme'" in e for e in refused.value.errors)


def test_the_check_follows_validation_into_a_thread_as_a_reload_runs_it() -> None:
    async def reload() -> None:
        with checking_prompts(None):
            await asyncio.to_thread(parse_config, office_text(closed="closed_today"))

    with pytest.raises(ConfigError, match="no prompt 'closed_today'"):
        asyncio.run(reload())
