"""How a command string (an image's start command, a user's extra command) becomes the
container's argument list. One parser for the launch and for every check before it (admin,
booking, profile, import), so a command that passes a check can always be launched."""

import shlex


def command_arguments(text: str) -> list[str]:
    """The argument list, split as a POSIX shell would but never run by one. Raises
    ValueError saying why the text cannot be read as arguments."""
    if "\x00" in text:
        raise ValueError("it contains a NUL character")
    return shlex.split(text)


def command_problem(text: str) -> str | None:
    """Why `text` cannot be launched, or None when it can."""
    try:
        command_arguments(text)
    except ValueError as error:
        return str(error)
    return None
