"""Fails when `makemessages` would add, drop or change an entry of a shipped catalogue, or
when a catalogue holds an untranslated or fuzzy entry (`make lint` runs it; docs/i18n.md).

It runs makemessages on a copy of the tree (the working tree is never written), then
compares the catalogues without their references (`#:` lines, which move with every edit)
and their POT-Creation-Date. `make messages` is the fix: it regenerates the catalogues in
place with the same options, then each new or fuzzy entry is translated by hand."""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The languages whose catalogue must be complete (English is the source language).
LANGUAGES = ("zh_Hant",)
# What is not the portal's own text: the tests, the separate command-line client.
IGNORED = ("tests/*", "cli/*", "staticfiles/*")
MAKEMESSAGES_OPTIONS = [option for pattern in IGNORED for option in ("--ignore", pattern)]


def catalogue(root: Path, language: str) -> Path:
    return root / "locale" / language / "LC_MESSAGES" / "django.po"


def comparable(text: str) -> list[str]:
    """The catalogue's entries as lines, less what changes without a message changing."""
    return [
        line
        for line in text.splitlines()
        if not line.startswith("#:") and not line.startswith('"POT-Creation-Date:')
    ]


def entries(text: str) -> list[list[str]]:
    return [block.splitlines() for block in text.split("\n\n") if block.strip()]


def unfinished(text: str) -> list[str]:
    """The msgids (first line) of the entries that are fuzzy or have no translation."""
    found = []
    for lines in entries(text):
        if any(line.startswith("#~") for line in lines):
            continue  # obsolete: kept by gettext for reuse, never shown
        msgid = _msgid_text(lines)
        if not msgid:
            continue  # the header
        fuzzy = any(line.startswith("#,") and "fuzzy" in line for line in lines)
        translations = _msgstrs(lines)
        if fuzzy or any(not value for value in translations):
            found.append(msgid)
    return found


def _msgstrs(lines: list[str]) -> list[str]:
    values: list[str] = []
    current: list[str] | None = None
    for line in lines:
        if line.startswith("msgstr"):
            current = [line.split(" ", 1)[1].strip('"')]
            values.append("")
        elif line.startswith('"') and current is not None:
            current.append(line.strip('"'))
        else:
            current = None
            continue
        values[-1] = "".join(current)
    return values


def _msgid_text(lines: list[str]) -> str:
    parts, on = [], False
    for line in lines:
        if line.startswith("msgid "):
            on = True
            parts.append(line[6:].strip('"'))
        elif on and line.startswith('"'):
            parts.append(line.strip('"'))
        elif on:
            break
    return "".join(parts)


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
            diff = list(
                difflib.unified_diff(
                    comparable(shipped),
                    comparable(fresh),
                    f"shipped {language}",
                    f"makemessages {language}",
                    lineterm="",
                    n=1,
                )
            )
            if diff:
                problems.append(f"{language}: makemessages would change the catalogue:")
                problems.extend(diff[:80] + (["  ..."] if len(diff) > 80 else []))
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
