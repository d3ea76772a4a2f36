"""Checks of the call-routing graph, run with the rest of the config validation.

What `minipbx check-config` refuses, each with where it is and how to fix it: a
destination naming no node or extension, a node nobody can reach, and loops without an
exit (nodes from which a call can never reach a person nor end: it would go round until
the hop limit), and a prompt or music a node names that the library does not have (the
caller would hear silence). Pure, but for the library's names: given as `sounds`, or
listed from its folders when validation runs inside `prompt_library.checking_prompts`
(check-config, reload); otherwise prompt names are not checked.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from firmware.calls.dialplan import DialPlan, RouteKind
from firmware.config.node_fields import extension_numbers, is_node_name
from firmware.config.schema import Config
from firmware.media.prompt_library import KnownSounds, sounds_to_check

# What a hunt group member may be: a person here, at a sibling office, or outside.
_MEMBER_ROUTES = (RouteKind.INTERNAL, RouteKind.SIBLING, RouteKind.OUTSIDE)

# Node kinds that put the caller through to people (or to an outside line) themselves.
_REACHES_PEOPLE = ("extension", "external", "hunt_group", "queue", "disa")

# The keys of each node kind that name a sound: (key, True for music:NAME, False for
# prompt:NAME). A test checks every schema key that looks like one is listed here.
SOUND_KEYS: dict[str, tuple[tuple[str, bool], ...]] = {
    "announcement": (("prompt", False),),
    "menu": (("greeting", False), ("invalid_prompt", False)),
    "queue": (("entry_prompt", False), ("comfort_prompt", False), ("music", True)),
    "hunt_group": (("music", True),),  # played only with caller_hears = "music"
}
_LANGUAGE_NAMES = {"en": "English", "pt": "Portuguese"}


def inbound_destinations(config: Config) -> Iterator[tuple[str, str]]:
    """(where, destination) for every place a call enters the graph from outside it."""
    for index, line in enumerate(config.lines):
        for destination in line.incoming:
            yield f"lines[{index}].incoming", destination
    for index, peer in enumerate(config.sip.peers):
        for did, destination in peer.incoming.items():
            if not destination.startswith("peer:"):
                yield f"sip.peers[{index}].incoming.{did}", destination


def check_graph(config: Config, sounds: KnownSounds | None = None) -> Iterator[str]:
    """Every problem of the routing graph; prompt and music names only when `sounds` says
    what the library holds, or inside `checking_prompts` (which lists its folders)."""
    routing = config.routing
    extensions = {extension.number for extension in config.extensions}
    names = [node.name for node in routing.nodes]
    for name in sorted({n for n in names if names.count(n) > 1}):
        yield f"routing.nodes: the name {name!r} is used more than once"
    nodes = {node.name: node for node in routing.nodes}
    plans: list[DialPlan] = []

    def dial_plan() -> DialPlan:
        if not plans:
            plans.append(DialPlan(config))
        return plans[0]

    where_of = {node.name: f"routing.nodes[{i}] ({node.name})" for i, node in enumerate(routing.nodes)}

    def check(where: str, destination: str) -> Iterator[str]:
        if is_node_name(destination):
            if destination not in nodes:
                yield f"{where}: no routing node named {destination!r}"
            return
        for number in extension_numbers(destination):
            if number not in extensions:
                yield f"{where}: no extension {number}"

    for index, line in enumerate(config.lines):
        if any(is_node_name(d) for d in line.incoming) and len(line.incoming) > 1:
            yield (
                f"lines[{index}].incoming: a routing node must be the only entry "
                f"(ring several extensions from the node instead)"
            )
    for where, destination in inbound_destinations(config):
        if is_node_name(destination) or where.startswith("sip."):
            yield from check(where, destination)
    modes = set(config.modes.all_names)
    for node in routing.nodes:
        where = where_of[node.name]
        for destination in node.destinations():
            yield from check(where, destination)
        if node.kind == "mode_switch":
            for mode in node.modes:
                if mode not in modes:
                    yield f"{where}.modes: {mode!r} is not a mode ({', '.join(sorted(modes))})"
        if node.kind == "extension":
            for number in node.extensions:
                if number not in extensions:
                    yield f"{where}.extensions: no extension {number}"
        if node.kind == "disa":
            for index, user in enumerate(node.users):
                if user.class_of_service not in config.classes_of_service:
                    known = ", ".join(sorted(config.classes_of_service)) or "none defined"
                    yield (
                        f"{where}.users[{index}].class_of_service: {user.class_of_service!r} "
                        f"is not a class of service ({known})"
                    )
        if node.kind == "queue":
            for number in node.agents:
                if number not in extensions:
                    yield f"{where}.agents: no extension {number}"
        if node.kind == "hunt_group":
            if len(node.members) > node.max_members:
                yield (
                    f"{where}.members: {len(node.members)} members, more than max_members "
                    f"({node.max_members}); raise max_members if this is intended"
                )
            plan = dial_plan()
            for member in node.members:
                if plan.route(None, member, unrestricted=True).kind not in _MEMBER_ROUTES:
                    yield (
                        f"{where}.members: {member!r} reaches no extension, sibling office "
                        f"or outside number"
                    )

    queues = {node.name for node in routing.nodes if node.kind == "queue"}
    for feature in config.feature_codes:
        for prefix in ("queue_login_", "queue_logout_"):
            if feature.startswith(prefix) and feature.removeprefix(prefix) not in queues:
                yield (
                    f"feature_codes.{feature}: no queue named {feature.removeprefix(prefix)!r} "
                    f"(queues: {', '.join(sorted(queues)) or 'none'})"
                )

    yield from _loops_without_exit(config, where_of)
    yield from _unreachable(config, where_of)
    if sounds is None:
        sounds = sounds_to_check(config)
    if sounds is not None:
        yield from check_sound_names(config, sounds)


def sound_references(config: Config) -> Iterator[tuple[str, str, bool]]:
    """(where.key, NAME, music?) for every prompt or music the routing config names."""
    yield "routing.unanswered_prompt", config.routing.unanswered_prompt, False
    for index, node in enumerate(config.routing.nodes):
        if node.kind == "hunt_group" and node.caller_hears != "music":
            continue
        for key, music in SOUND_KEYS.get(node.kind, ()):
            name = getattr(node, key)
            if name is not None:
                yield f"routing.nodes[{index}] ({node.name}).{key}", name, music


def check_sound_names(config: Config, sounds: KnownSounds) -> Iterator[str]:
    """A named prompt or music the library lacks: where, the name, and close names in it.

    Without a data folder (`sounds.uploads` None) only the shipped library is known, and
    the message says so: the name may be an upload that was not looked at.
    """
    language = _LANGUAGE_NAMES.get(sounds.language, sounds.language)
    for where, name, music in sound_references(config):
        known, other = (sounds.music, sounds.prompts) if music else (sounds.prompts, sounds.music)
        if name in known:
            continue
        what = "music" if music else "prompt"
        if sounds.uploads is None:
            place = (
                f"in the shipped {language} library (no data folder given, uploaded prompts "
                f"were not looked at: check with --data-dir)"
            )
        else:
            place = f"for {language}, shipped or uploaded to {sounds.uploads}"
        if name in other:
            hint = f"{name!r} is {'a prompt' if music else 'music'}, not {what}"
        else:
            close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
            hint = (
                f"close: {', '.join(repr(c) for c in close)}" if close
                else "no close name (`minipbx prompt list` shows them all)"
            )
        upload = f"minipbx prompt add {name} FILE.wav{' --music' if music else ''}"
        yield f"{where}: no {what} {name!r} {place}; {hint}; or upload it: {upload}"


def _loops_without_exit(config: Config, where_of: dict[str, str]) -> Iterator[str]:
    """Nodes from which no path reaches a person, an extension, or "" (the call's end)."""
    nodes = {node.name: node for node in config.routing.nodes}
    can_end: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, node in nodes.items():
            if name in can_end:
                continue
            ends = (
                node.kind in _REACHES_PEOPLE
                or (node.kind == "menu" and node.dial_through)
                or any(not is_node_name(d) or d in can_end for d in node.destinations())
            )
            if ends:
                can_end.add(name)
                changed = True
    for name in nodes:
        if name not in can_end:
            yield (
                f"{where_of[name]}: a loop without an exit: every way on from here comes back "
                f"without reaching a person or ending the call; send one of them to an "
                f'extension, a group, or "" (the end)'
            )


def _unreachable(config: Config, where_of: dict[str, str]) -> Iterator[str]:
    nodes = {node.name: node for node in config.routing.nodes}
    reached: set[str] = set()
    todo = [d for _, d in inbound_destinations(config) if d in nodes]
    todo += [node.name for node in config.routing.nodes if node.number]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        todo += [d for d in nodes[name].destinations() if d in nodes]
    for name in nodes:
        if name not in reached:
            yield (
                f"{where_of[name]}: no line, DID, number or other node leads here; "
                f"send calls to it or give it a `number`"
            )
