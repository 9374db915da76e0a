"""tools/check_catalogue.py, which `make lint` runs: it tells a catalogue that makemessages
would change from one that only moved (references, wrapping, creation date)."""

from tools.check_catalogue import changes, unfinished

SHIPPED = """msgid ""
msgstr ""
"POT-Creation-Date: 2026-11-23 03:26+0800\\n"
"Content-Type: text/plain; charset=UTF-8\\n"

#: accounts/forms.py:11
msgid "Language"
msgstr "語言"

#: jobs/forms.py:31
#, python-format
msgid "Memory (%(unit)s)"
msgstr "記憶體 (%(unit)s)"

#~ msgid "Never"
#~ msgstr "永不"
"""


def test_moved_references_rewrapped_lines_and_a_new_date_are_no_change():
    fresh = (
        SHIPPED.replace("2026-11-23 03:26", "2026-12-07 09:00")
        .replace("accounts/forms.py:11", "accounts/forms.py:52 accounts/views.py:3")
        .replace('msgstr "記憶體 (%(unit)s)"', 'msgstr ""\n"記憶體 "\n"(%(unit)s)"')
    )
    assert changes(SHIPPED, fresh) == []
    assert unfinished(fresh) == []


def test_a_new_entry_a_dropped_one_and_a_fuzzy_one_are_reported():
    fresh = SHIPPED.replace(
        '#: accounts/forms.py:11\nmsgid "Language"\nmsgstr "語言"\n',
        '#: jobs/forms.py:9\nmsgid "Memory (GB)"\nmsgstr ""\n',
    ).replace("#, python-format", "#, fuzzy, python-format")
    assert changes(SHIPPED, fresh) == [
        "new entry: 'Memory (GB)'",
        "entry gone: 'Language'",
        "entry changed: 'Memory (%(unit)s)'",
    ]
    assert unfinished(fresh) == ["Memory (GB)", "Memory (%(unit)s)"]
