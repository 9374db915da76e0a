"""Fails when `makemessages` would add, drop or change an entry of a shipped catalogue, or
when a catalogue holds an untranslated or fuzzy entry (`make lint` runs it; docs/i18n.md).

It runs makemessages on a copy of the tree (the working tree is never written), then
compares the catalogues entry by entry: msgid, context, plural, translations and flags,
not their references (`#:` lines, which move with every edit), line wrapping (which
differs between gettext versions) or POT-Creation-Date. `make messages` is the fix: it
regenerates the catalogues in place with the same options, then each new or fuzzy entry
is translated by hand."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The languages whose catalogue must be complete (English is the source language).
LANGUAGES = ("zh_Hant",)
# What is not the portal's own text: the tests, the separate command-line client.
IGNORED = ("tests/*", "cli/*", "staticfiles/*")
MAKEMESSAGES_OPTIONS = [option for pattern in IGNORED for option in ("--ignore", pattern)]


def catalogue(root: Path, language: str) -> Path:
    return root / "locale" / language / "LC_MESSAGES" / "django.po"


ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": "\r"}
ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Entry:
    """One message as gettext means it, whatever the line wrapping of the file."""

    context: str | None
    msgid: str
    plural: str | None
    translations: tuple[str, ...]
    flags: frozenset[str]
    obsolete: bool

    @property
    def key(self) -> tuple:
        return (self.context, self.msgid, self.plural)


def _unquote(text: str) -> str:
    return ESCAPE.sub(lambda match: ESCAPES.get(match.group(1), match.group(1)), text.strip()[1:-1])


def entries(text: str) -> list[Entry]:
    """The entries of a catalogue, less its header, references and previous msgids."""
    found = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        flags: set[str] = set()
        obsolete = False
        current = None
        for raw in block.splitlines():
            line = raw
            if line.startswith("#~"):
                obsolete, line = True, line[2:].lstrip()
            if line.startswith("#,"):
                flags.update(flag.strip() for flag in line[2:].split(",") if flag.strip())
                continue
            if line.startswith("#") or not line.strip():
                continue  # references, previous msgids (#|) and comments
            if line.startswith('"') and current is not None:
                fields[current] += _unquote(line)
                continue
            keyword, _, rest = line.partition(" ")
            current = keyword
            fields[current] = _unquote(rest)
        if "msgid" not in fields or (not fields["msgid"] and "msgctxt" not in fields):
            continue  # the header (its POT-Creation-Date changes at every run)
        translations = tuple(value for key, value in sorted(fields.items()) if key.startswith("msgstr"))
        found.append(
            Entry(
                context=fields.get("msgctxt"),
                msgid=fields["msgid"],
                plural=fields.get("msgid_plural"),
                translations=translations,
                flags=frozenset(flags),
                obsolete=obsolete,
            )
        )
    return found


def changes(shipped: str, fresh: str) -> list[str]:
    """What makemessages would add, drop or change, one line each."""
    before = {entry.key: entry for entry in entries(shipped) if not entry.obsolete}
    after = {entry.key: entry for entry in entries(fresh) if not entry.obsolete}
    lines = [f"new entry: {key[1]!r}" for key in after if key not in before]
    lines += [f"entry gone: {key[1]!r}" for key in before if key not in after]
    lines += [
        f"entry changed: {key[1]!r}" for key, entry in after.items() if key in before and before[key] != entry
    ]
    return lines


def unfinished(text: str) -> list[str]:
    """The msgids of the entries that are fuzzy or have no translation."""
    return [
        entry.msgid
        for entry in entries(text)
        if not entry.obsolete and ("fuzzy" in entry.flags or not all(entry.translations))
    ]


def _tree_files(root: Path) -> list[str]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return [
            str(path.relative_to(root))
            for path in root.rglob("*")
            if path.is_file() and ".venv" not in path.parts and ".git" not in path.parts
        ]
    return [name for name in listed.decode().split("\0") if name]


def regenerate(root: Path, into: Path, languages: tuple[str, ...]) -> None:
    for name in _tree_files(root):
        source = root / name
        if not source.is_file() or source.is_symlink():
            continue
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    command = [sys.executable, "manage.py", "makemessages"]
    command += [option for language in languages for option in ("-l", language)]
    subprocess.run(
        command + MAKEMESSAGES_OPTIONS,
        cwd=into,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def check(root: Path = ROOT, languages: tuple[str, ...] = LANGUAGES) -> list[str]:
    """The problems found, as lines for a person; empty when the catalogues are current."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="aivc-catalogue-") as scratch:
        copy = Path(scratch)
        regenerate(root, copy, languages)
        for language in languages:
            shipped = catalogue(root, language).read_text(encoding="utf-8")
            fresh = catalogue(copy, language).read_text(encoding="utf-8")
            for line in changes(shipped, fresh):
                problems.append(f"{language}: makemessages would make a {line}")
            problems.extend(f"{language}: untranslated or fuzzy: {msgid!r}" for msgid in unfinished(fresh))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("languages", nargs="*", default=list(LANGUAGES))
    arguments = parser.parse_args()
    problems = check(ROOT, tuple(arguments.languages))
    if problems:
        print("\n".join(problems))
        print("\nRun `make messages`, translate every new or fuzzy entry, then commit (docs/i18n.md).")
        return 1
    print(f"Catalogues current and complete: {', '.join(arguments.languages)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
