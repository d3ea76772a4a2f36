"""Reading, validating and cross-checking the TOML configuration.

Validation collects every error with its key path (and the line for syntax errors) so an
installer fixes a file in one pass. A config that fails here is never put into service.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from firmware.calls.dialplan import DialPlan, RouteKind
from firmware.calls.digitmap import DigitMap, MatchState
from firmware.config.accounting_schema import config_folder, cross_check_accounting
from firmware.config.schema import Config


class ConfigError(Exception):
    """A configuration that must not be used; `errors` lists every problem found."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(errors))


def default_config_text() -> str:
    return resources.files("firmware.config").joinpath("default.toml").read_text("utf-8")


def load_config(path: str | Path | None = None) -> Config:
    """Load the file at `path`, or the embedded default when `path` is None."""
    if path is None:
        return parse_config(default_config_text(), "<embedded default>")
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise ConfigError(str(path), [f"cannot read the file: {error.strerror}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(str(path), [f"not UTF-8 text: {error.reason}"]) from None
    with config_folder(path.resolve().parent):  # relative rates_csv paths: next to the file
        return parse_config(text, str(path))


def parse_config(text: str, source: str = "<text>") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, [f"TOML syntax: {error}"]) from None
    try:
        config = Config.model_validate(raw)
    except ValidationError as error:
        problems = [_format_pydantic(e) for e in error.errors()]
        problems += _cross_check_the_rest(raw, error)
        raise ConfigError(source, problems) from None
    problems = list(cross_check(config))
    if problems:
        raise ConfigError(source, problems)
    return config


def _cross_check_the_rest(raw: dict[str, Any], error: ValidationError) -> list[str]:
    """Cross-check what did validate, so one pass shows every mistake of the file.

    The bad values are removed (their defaults apply) or, where that is not enough (a
    required value was bad), the whole list entry; the cross-checks run on the rest. Their
    findings about the removed parts are repeats and left out; list positions in the
    findings are those of the file.
    """
    paths = [
        [part for part in item["loc"] if isinstance(part, int) or not _is_validator_tag(part)]
        for item in error.errors()
    ]
    for whole_entries in (False, True):
        if whole_entries:
            paths = [_up_to_last_index(path) for path in paths]
        pruned = copy.deepcopy(raw)
        dropped_entries: dict[str, list[int]] = {}
        for path in sorted({tuple(p) for p in paths}, reverse=True):  # later entries first
            if _remove(pruned, list(path)) and len(path) == 2 and isinstance(path[1], int):
                dropped_entries.setdefault(path[0], []).append(path[1])
        try:
            config = Config.model_validate(pruned)
        except ValidationError:
            continue
        removed = tuple(_format_path(path) for path in paths)
        findings = [_renumber(problem, dropped_entries) for problem in cross_check(config)]
        return [problem for problem in findings if not problem.startswith(removed)]
    return []  # what is left still does not validate: the schema errors speak alone


def _up_to_last_index(path: list[Any]) -> list[Any]:
    indexes = [i for i, part in enumerate(path) if isinstance(part, int)]
    return path[: indexes[-1] + 1] if indexes else path


def _renumber(problem: str, dropped: dict[str, list[int]]) -> str:
    """`extensions[1]` of the pruned tree back to its position in the file."""
    match = re.match(r"(\w+)\[(\d+)\]", problem)
    if match is None or match.group(1) not in dropped:
        return problem
    index = int(match.group(2))
    for gone in sorted(dropped[match.group(1)]):
        if gone <= index:
            index += 1
    return f"{match.group(1)}[{index}]{problem[match.end():]}"


def _remove(tree: Any, path: list[Any]) -> bool:
    for part in path[:-1]:
        try:
            tree = tree[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = path[-1] if path else None
    present = (isinstance(tree, dict) and last in tree) or (
        isinstance(tree, list) and isinstance(last, int) and last < len(tree)
    )
    if present:
        del tree[last]
    return present


def _is_validator_tag(part: str) -> bool:
    return part.startswith(("function-after", "function-before")) or part in ("str", "none", "int")


def _format_path(path: list[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _format_pydantic(error: Any) -> str:
    path = [part for part in error["loc"] if isinstance(part, int) or not _is_validator_tag(part)]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (misspelt, or not valid in this section)"
    return f"{_format_path(path) or '<top>'}: {message}"


def cross_check(config: Config) -> Iterator[str]:
    """References between sections, which no single field can check."""
    from firmware.media.tones import TONE_NAMES, TONE_PLANS, parse_tone

    card = config.line_card
    fxs = card.fxs_range
    fxo = card.fxo_range

    def describe_ports(ports: range, kind: str) -> str:
        return (
            f"the card has {kind} ports {ports.start}-{ports.stop - 1}"
            if ports
            else (f"the card has no {kind} ports")
        )

    if config.site.country not in TONE_PLANS:
        yield (
            f"site.country: {config.site.country!r} has no tone plan; "
            f"use one of {', '.join(sorted(TONE_PLANS))}"
        )
    elif config.lines:
        longest_pause = max(TONE_PLANS[config.site.country].ring_cadence_ms[1::2]) / 1000
        if config.timers.fxo_ring_gone_s <= longest_pause:
            yield (
                f"timers.fxo_ring_gone_s: {config.timers.fxo_ring_gone_s} s is not longer than the "
                f"{longest_pause} s pause between rings in {config.site.country!r}: every city "
                f"call would look abandoned between two rings"
            )
    try:
        ZoneInfo(config.site.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        yield f"site.timezone: {config.site.timezone!r} is not a known zone (e.g. 'Europe/Lisbon')"
    for name, text in config.tones.items():
        if name not in TONE_NAMES:
            yield f"tones.{name}: unknown tone; tones are {', '.join(TONE_NAMES)}"
            continue
        try:
            parse_tone(text)
        except ValueError as error:
            yield f"tones.{name}: {error}"

    numbers: dict[str, str] = {}
    ports: dict[int, str] = {}
    for index, extension in enumerate(config.extensions):
        where = f"extensions[{index}]"
        if extension.number in numbers:
            yield f"{where}.number: {extension.number} is already used by {numbers[extension.number]}"
        numbers.setdefault(extension.number, where)
        if extension.port is None:
            if extension.sip_password is None:
                yield f"{where}.port: an extension needs an FXS port, a sip_password (SIP phones), or both"
        elif extension.port not in fxs:
            yield f"{where}.port: port {extension.port} is not an FXS port: {describe_ports(fxs, 'FXS')}"
        elif extension.port in ports:
            yield f"{where}.port: port {extension.port} is already used by {ports[extension.port]}"
        else:
            ports[extension.port] = where
        password = extension.sip_password
        if password is not None and (len(password) < 8 or not password.isprintable()):
            yield (
                f"{where}.sip_password: use at least 8 printable characters "
                f"(a SIP password is guessed from the network, keep it long)"
            )
        if extension.class_of_service not in config.classes_of_service:
            yield (
                f"{where}.class_of_service: {extension.class_of_service!r} is not defined "
                f"in [classes_of_service]"
            )

    for index, extension in enumerate(config.extensions):
        target = extension.forward_no_answer
        if target is not None and target not in numbers:
            yield f"extensions[{index}].forward_no_answer: no extension {target}"

    groups = {group.name for group in config.line_groups}
    for index, line in enumerate(config.lines):
        where = f"lines[{index}]"
        if line.port not in fxo:
            yield f"{where}.port: port {line.port} is not an FXO port: {describe_ports(fxo, 'FXO')}"
        elif line.port in ports:
            yield f"{where}.port: port {line.port} is already used by {ports[line.port]}"
        else:
            ports[line.port] = where
        if line.group not in groups:
            yield f"{where}.group: no line group named {line.group!r} in [[line_groups]]"
        for target in line.incoming:
            if target not in numbers and not target[:1].isalpha():  # nodes: check_graph
                yield f"{where}.incoming: no extension {target}"
    if card.audio == "alsa":
        mapped: dict[tuple[str, int], int] = {}
        for audio_port in card.audio_ports:
            where = (audio_port.device, audio_port.channel)
            if where in mapped:
                yield (
                    f"line_card.audio_ports: ports {mapped[where]} and {audio_port.port} both use "
                    f"channel {audio_port.channel} of {audio_port.device!r}"
                )
            mapped[where] = audio_port.port
        with_audio = {audio_port.port for audio_port in card.audio_ports}
        for port, user in sorted(ports.items()):
            if port not in with_audio:
                yield (
                    f"line_card.audio_ports: port {port} ({user}) has no sound device: add "
                    f"[[line_card.audio_ports]] with port = {port}, device and channel"
                )
    line_names = [line.name for line in config.lines]
    for name in {n for n in line_names if line_names.count(n) > 1}:
        yield f"lines: the name {name!r} is used more than once"

    for cos_name, cos in config.classes_of_service.items():
        for group in cos.line_groups:
            if group not in groups:
                yield f"classes_of_service.{cos_name}.line_groups: no line group named {group!r}"

    if config.numbering.operator_code and not config.numbering.operator:
        yield "numbering.operator_code: set numbering.operator to the extension it rings"
    if config.numbering.operator and config.numbering.operator not in numbers:
        yield f"numbering.operator: no extension {config.numbering.operator}"

    yield from _sip_checks(config, numbers)
    yield from _numbering_conflicts(config)

    from firmware.modes.checks import cross_check_modes

    yield from cross_check_modes(config)
    yield from cross_check_accounting(config)

    from firmware.features.graph import check_graph

    yield from check_graph(config)
    for department, members in config.reports.departments.items():
        for number in members:
            if number not in numbers:
                yield f"reports.departments.{department}: extension {number} is not in [[extensions]]"


def _sip_checks(config: Config, numbers: dict[str, str]) -> Iterator[str]:
    peers = {peer.name: peer for peer in config.sip.peers}
    if not config.sip.digest_algorithms:
        yield "sip.digest_algorithms: offer at least one of 'SHA-256', 'MD5'"
    for network in config.sip.trusted_networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            yield f"sip.trusted_networks: {network!r} is not a network (e.g. '192.168.1.0/24')"
    for index, group in enumerate(config.line_groups):
        for name in group.sip_peers:
            if name not in peers:
                yield f"line_groups[{index}].sip_peers: no SIP peer named {name!r} in [[sip.peers]]"
    realm = config.sip.realm
    if realm and (not realm.isprintable() or '"' in realm or "\\" in realm):
        yield f"sip.realm: {realm!r} must be printable text without quotes or backslashes"
    low, high = config.sip.rtp_ports
    if not 1024 <= low < high <= 65535:
        yield f"sip.rtp_ports: {low}-{high} must be a range within 1024-65535"
    for index, peer in enumerate(config.sip.peers):
        for did, destination in peer.incoming.items():
            where = f"sip.peers[{index}].incoming.{did}"
            if destination.startswith("peer:"):
                target = destination.removeprefix("peer:").split("/")[0]
                if target not in peers:
                    yield f"{where}: no SIP peer named {target!r}"
                elif not peer.allow_tandem:
                    yield f"{where}: passing calls from {peer.name!r} to another peer needs allow_tandem = true"
                continue
            if destination[:1].isalpha():
                continue  # a routing node: check_graph
            for number in destination.split(","):
                if number.strip() not in numbers:
                    yield f"{where}: no extension {number.strip()!r} (use '201,202', a routing node's name or 'peer:NAME')"
    names = [peer.name for peer in config.sip.peers]
    for name in {n for n in names if names.count(n) > 1}:
        yield f"sip.peers: the name {name!r} is used more than once"
    groups = {group.name for group in config.line_groups}
    for name in sorted(groups & set(peers)):
        yield f"sip.peers: {name!r} is also a line group's name; routes name both, use another"
    for index, route in enumerate(config.outbound_routes):
        for name in route.line_groups:
            if name not in groups:
                yield f"outbound_routes[{index}].line_groups: no line group named {name!r}"
        for name in route.via:
            if name not in groups and name not in peers:
                yield f"outbound_routes[{index}].via: {name!r} is neither a SIP peer nor a line group"
    yield from _sibling_checks(config, numbers)


def _sibling_checks(config: Config, numbers: dict[str, str]) -> Iterator[str]:
    """Ranges must not overlap (a number rings in exactly one office)."""
    own = DigitMap(list(config.site.extension_ranges)) if config.site.extension_ranges else None
    if own is not None:
        for number in numbers:
            if own.match(number).state != MatchState.COMPLETE:
                yield f"extensions: {number} is outside site.extension_ranges {list(config.site.extension_ranges)}"
    names = [site.name for site in config.sibling_sites]
    for name in {n for n in names if names.count(n) > 1}:
        yield f"sibling_sites: the name {name!r} is used more than once"
    fixed = [(g.access_code, f"line group {g.name!r} access code") for g in config.line_groups]
    fixed += [(n, f"emergency number {n}") for n in config.numbering.emergency]
    fixed += [(g.access_code + n, f"emergency number {g.access_code}{n}") for g in config.line_groups
              for n in config.numbering.emergency]  # fmt: skip
    fixed += [(c, f"feature code {name!r}") for name, c in config.feature_codes.items()]
    if config.numbering.operator_code:
        fixed.append((config.numbering.operator_code, "operator code"))
    seen_patterns: dict[str, str] = {}
    for index, site in enumerate(config.sibling_sites):
        where = f"sibling_sites[{index}]"
        site_map = DigitMap(list(site.extensions))
        for code, what in fixed:
            prefixes = (code[:end] for end in range(1, len(code)))
            if site_map.match(code).state != MatchState.NO_MATCH or any(
                site_map.match(prefix).state in (MatchState.COMPLETE, MatchState.AMBIGUOUS) for prefix in prefixes
            ):
                yield f"{where}.extensions: {site.extensions} overlap {what} ({code}): a sibling range must not shadow it"
        for pattern in site.extensions:
            if pattern in seen_patterns:
                yield f"{where}.extensions: {pattern!r} is also a range of {seen_patterns[pattern]!r}"
            seen_patterns.setdefault(pattern, site.name)
        if site.fallback == "pstn" and site.fallback_number:
            fallback = DialPlan(config).route(None, site.fallback_number, unrestricted=True)
            if fallback.kind != RouteKind.OUTSIDE:
                yield (
                    f"{where}.fallback_number: {site.fallback_number!r} is not an outside number here "
                    f"(access code + a number of numbering.destination_kinds)"
                )
        if site.name == config.site.name:
            yield f"{where}.name: {site.name!r} is this site's own name"
        ranges = DigitMap(list(site.extensions))
        for number in numbers:
            if ranges.match(number).state == MatchState.COMPLETE:
                yield f"{where}.extensions: {number} is an extension of this site"
        cos = site.class_of_service
        if cos is not None and cos not in config.classes_of_service:
            yield f"{where}.class_of_service: {cos!r} is not defined in [classes_of_service]"
        if site.host and not config.sip.listen:
            yield f"{where}.host: sibling links need SIP: set [sip] listen"


def _numbering_conflicts(config: Config) -> Iterator[str]:
    """Every dialled code must be distinguishable from the others as soon as it is complete."""
    codes: list[tuple[str, str]] = [(e.number, f"extension {e.number}") for e in config.extensions]
    codes += [(g.access_code, f"line group {g.name!r} access code") for g in config.line_groups]
    codes += [(n, f"emergency number {n}") for n in config.numbering.emergency]
    codes += [(c, f"feature code {name!r}") for name, c in config.feature_codes.items()]
    codes += [(n.number, f"routing node {n.name!r}") for n in config.routing.nodes if n.number]
    if config.numbering.operator_code:
        codes.append((config.numbering.operator_code, "operator code"))
    for first_index, (first, first_what) in enumerate(codes):
        for second, second_what in codes[first_index + 1 :]:
            if first == second and first_what == second_what:
                continue  # a duplicate extension number: reported with its key path above
            if first == second:
                yield f"numbering: {first_what} and {second_what} are both {first!r}"
            elif second.startswith(first) or first.startswith(second):
                short, long_ = sorted(
                    ((first, first_what), (second, second_what)), key=lambda c: len(c[0])
                )
                yield (
                    f"numbering: {long_[1]} ({long_[0]}) can never be dialled: "
                    f"{short[1]} ({short[0]}) is a prefix of it"
                )
