"""`minipbx prompt ...`: upload, list, remove and check announcements (see docs/prompts.md).

These work on the uploads folder directly (DATA_DIR/prompts by default), with or without
a running core; a running core picks changes up at its next `minipbx reload`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from firmware.config.load import ConfigError, load_config
from firmware.config.schema import Config
from firmware.media.prompts import (
    LANGUAGES,
    Converted,
    PromptError,
    PromptKey,
    convert,
    import_prompt,
    read_upload,
    remove,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `prompt add|list|remove|check` to the `minipbx` parser."""
    prompt = sub.add_parser("prompt", help="announcements and music on hold")
    actions = prompt.add_subparsers(dest="prompt_command", required=True)

    add = actions.add_parser(
        "add",
        help="validate a WAV, convert it to 8 kHz mono at telephone level and store it",
        description="Store NAME from FILE (RIFF WAV, at most 2 MB by default). Refused files"
        " are not stored and the reason is printed. The same name as a shipped prompt"
        " replaces it.",
    )
    add.add_argument("name", help="prompt name, e.g. please_hold or welcome")
    add.add_argument("file", help="WAV file")
    _kind_options(add)
    _common_options(add)
    add.set_defaults(func=cmd_add)

    listing = actions.add_parser("list", help="the prompts and music a core would play")
    listing.add_argument("--language", choices=LANGUAGES, help="default: the configured one")
    listing.add_argument("--json", action="store_true")
    _common_options(listing)
    listing.set_defaults(func=cmd_list)

    removal = actions.add_parser("remove", help="delete an uploaded prompt (shipped ones stay)")
    removal.add_argument("name")
    _kind_options(removal)
    _common_options(removal)
    removal.set_defaults(func=cmd_remove)

    check = actions.add_parser("check", help="validate and convert a WAV without storing it")
    check.add_argument("file")
    check.add_argument("--music", action="store_true", help="check at the music level")
    check.add_argument("--config", help="TOML file (default: the embedded default office)")
    check.set_defaults(func=cmd_check)


def _kind_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--music", action="store_true", help="music on hold (loops)")
    parser.add_argument(
        "--language", choices=LANGUAGES, help="only for this language (default: every language)"
    )


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file (default: the embedded default office)")
    parser.add_argument("--data-dir", help="data folder (default: from the config)")


def cmd_add(args: argparse.Namespace) -> int:
    config = _config(args)
    folder = _uploads(args, config)
    try:
        key = PromptKey(args.name, music=args.music, language=args.language)
        path, converted = import_prompt(
            args.file,
            folder,
            key,
            max_bytes=config.prompts.max_upload_bytes,
            max_seconds=config.prompts.max_seconds,
        )
    except PromptError as error:
        return _refuse(f"{args.name} not added: {args.file}: {error.reason}")
    except OSError as error:  # the uploads folder: permissions, a full disk
        return _refuse(f"{args.name} not added: cannot write to {folder}: {error.strerror}")
    print(f"stored {key.describe()} in {path}")
    print(_summary(converted))
    print("a running core plays it after `minipbx reload`")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from firmware.media.prompt_library import library_entries, prompt_language

    config = _config(args)
    language = args.language or prompt_language(config)
    entries = library_entries(language, _uploads(args, config))
    if args.json:
        rows: list[dict[str, Any]] = [
            {
                "sound": entry.sound_name,
                "seconds": round(entry.seconds, 2),
                "source": "uploaded" if entry.uploaded else "shipped",
                "overrides_shipped": entry.overrides_shipped,
                "path": str(entry.path),
            }
            for entry in entries
        ]
        print(json.dumps({"language": language, "sounds": rows}, indent=2))
        return 0
    print(f"language {language}: {len(entries)} sounds")
    for entry in entries:
        source = "uploaded" if entry.uploaded else "shipped"
        if entry.overrides_shipped:
            source += ", replaces shipped"
        print(f"  {entry.sound_name:<32} {entry.seconds:6.2f} s  {source}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        key = PromptKey(args.name, music=args.music, language=args.language)
        path = remove(_uploads(args, config), key)
    except PromptError as error:
        return _refuse(error.reason)
    except OSError as error:
        return _refuse(f"cannot remove {args.name}: {error.strerror}")
    print(f"removed {path}; a running core notices at its next `minipbx reload`")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        data = read_upload(args.file, config.prompts.max_upload_bytes)
        converted = convert(data, music=args.music, max_seconds=config.prompts.max_seconds)
    except PromptError as error:
        return _refuse(f"{args.file}: {error.reason}")
    print(f"{args.file}: OK")
    print(_summary(converted))
    return 0


def _summary(converted: Converted) -> str:
    return (
        f"  from {converted.source.description}, {converted.source_seconds:.2f} s;"
        f" stored as 8000 Hz mono 16-bit, {converted.seconds:.2f} s,"
        f" level {converted.level_dbm0:.1f} dBm0 (gain {converted.gain_db:+.1f} dB)"
    )


def _config(args: argparse.Namespace) -> Config:
    try:
        return load_config(args.config) if args.config else load_config()
    except ConfigError as error:
        raise SystemExit("minipbx: config refused:\n  " + "\n  ".join(error.errors)) from None


def _uploads(args: argparse.Namespace, config: Config) -> Path:
    from firmware.media.prompt_library import uploads_folder

    if args.data_dir:
        return uploads_folder(config.prompts, Path(args.data_dir))
    from firmware.app import default_data_dir  # the whole core: only when needed

    return uploads_folder(config.prompts, default_data_dir(config))


def _refuse(message: str) -> int:
    print(f"minipbx: {message}", file=sys.stderr)
    return 1
