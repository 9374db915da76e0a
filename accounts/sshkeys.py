"""OpenSSH public key lines, as in authorized_keys but without options: the keys are
mounted into containers, so a line may only say which key it is."""

import base64
import binascii
import re
import struct

from django.core.exceptions import ValidationError

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
MAX_KEYS = 20
# Everything str.splitlines() breaks on except "\n": a key line holding one of these could
# be read as two lines (the second with options) by whatever splits it next.
OTHER_LINE_BREAKS = re.compile("[\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _key_type_inside(blob: bytes) -> str | None:
    """The key type the base64 body names itself: a uint32 length then that many bytes."""
    if len(blob) < 4:
        return None
    (length,) = struct.unpack(">I", blob[:4])
    if length > len(blob) - 4:
        return None
    return blob[4 : 4 + length].decode("ascii", errors="replace")


def clean_ssh_public_keys(text: str) -> str:
    """Checks every non-blank line is `type base64 [comment]` with a known type whose body
    agrees with it; returns the lines, trimmed, one per line."""
    lines = [line.strip() for line in (text or "").replace("\r\n", "\n").split("\n") if line.strip()]
    if len(lines) > MAX_KEYS:
        raise ValidationError(f"At most {MAX_KEYS} keys.", code="too_many_keys")
    errors = []
    for number, line in enumerate(lines, start=1):
        if OTHER_LINE_BREAKS.search(line):
            errors.append(
                f"Line {number} contains a line break other than a new line; put each key on its own line."
            )
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 2 or parts[0] not in KEY_TYPES:
            errors.append(
                f"Line {number} is not an OpenSSH public key (it should start with ssh-ed25519, "
                "ssh-rsa or ecdsa-sha2-…, without options)."
            )
            continue
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            errors.append(f"Line {number}: the key body is not valid base64.")
            continue
        if _key_type_inside(blob) != parts[0]:
            errors.append(f"Line {number}: the key body does not match its type {parts[0]}.")
    if errors:
        raise ValidationError(errors, code="invalid_ssh_key")
    return "\n".join(lines)
