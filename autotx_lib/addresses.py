"""E-mail addresses built and checked with the standard library's ``email`` parser.

A user's address is often made from their folder name (``{user}@example.org``), and
folder names are chosen by whoever can write to ``incoming/``. A folder named
``evil@attacker.test,alice`` must not add a recipient, and one holding a line
separator must not break the message. So every address is parsed by
:mod:`email.headerregistry`; anything but exactly one plain ASCII address is refused
with a reason (a :class:`ValueError`), and callers decide what to do (no mail, a
warning to the admin).

Examples
--------
>>> str(parse_address("Alice Smith <alice@example.org>"))
'Alice Smith <alice@example.org>'
>>> address_for_user("alice", "{user}@example.org").addr_spec
'alice@example.org'
>>> address_for_user("evil@attacker.test,alice", "{user}@example.org")  # doctest: +ELLIPSIS
Traceback (most recent call last):
ValueError: 'evil@attacker.test,alice@example.org' is not one plain address ...
"""

from __future__ import annotations

import email.errors
import email.policy
from email.headerregistry import Address

# what the header parser raises on malformed input (IndexError on e.g. "a@")
_PARSE_ERRORS = (ValueError, IndexError, email.errors.MessageError)


def _printable(text: str) -> None:
    # str.isprintable is False for control characters, U+2028/U+2029 and other
    # separators that would split or break a header line
    if not text.isprintable():
        raise ValueError("it contains a control or line-separator character")


def _plain(address: Address) -> Address:
    """The same address after a strict re-parse of its addr-spec; ASCII only."""
    if not address.username or not address.domain:
        raise ValueError("it is not of the form name@domain")
    if not address.addr_spec.isascii():
        raise ValueError("the address itself has non-ASCII characters")
    try:
        strict = Address(addr_spec=address.addr_spec)
    except _PARSE_ERRORS as error:
        raise ValueError(str(error) or error.__class__.__name__) from None
    return Address(display_name=address.display_name, addr_spec=strict.addr_spec)


def parse_address(text: str) -> Address:
    """Exactly one e-mail address from ``text``: ``a@b.org`` or ``Name <a@b.org>``.

    Parameters
    ----------
    text : str
        The address as written in the configuration or the outbox.

    Returns
    -------
    address : email.headerregistry.Address

    Raises
    ------
    ValueError
        Saying why: several addresses, a group, a control or line-separator character,
        a malformed or non-ASCII address.
    """
    _printable(text)
    try:
        header = email.policy.default.header_factory("To", text)
    except _PARSE_ERRORS as error:
        raise ValueError(f"it cannot be parsed ({error or error.__class__.__name__})") from None
    if header.defects:
        raise ValueError(str(header.defects[0]))
    if len(header.addresses) != 1:
        raise ValueError(f"it holds {len(header.addresses)} addresses, not one")
    if header.groups[0].display_name is not None:
        raise ValueError("it is a group, not one address")
    return _plain(header.addresses[0])


def address_for_user(user: str, pattern: str) -> Address:
    """The address ``pattern`` gives for ``user`` (``{user}`` filled in), checked.

    The user name may only change the local part: the result must be one plain
    address, exactly as written, at the pattern's own domain.

    Raises
    ------
    ValueError
        Saying why the user name cannot be made into an address safely.
    """
    _printable(user)
    text = pattern.format(user=user)
    try:
        address = _plain(Address(addr_spec=text))
    except _PARSE_ERRORS as error:
        raise ValueError(f"{text!r} is not one plain address "
                         f"({error or error.__class__.__name__})") from None
    if address.addr_spec != text:
        raise ValueError(f"{text!r} is read as {address.addr_spec!r}")
    expected = Address(addr_spec=pattern.format(user="user")).domain
    if address.domain != expected:
        raise ValueError(f"{text!r} is not at the pattern's domain {expected!r}")
    return address


def check_pattern(pattern: str) -> None:
    """Raise ValueError unless ``pattern`` has one ``{user}`` field and gives an address."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as error:
        raise ValueError(f"bad pattern: {error}") from None
    if fields != ["user"]:
        raise ValueError("use {user} as the only field, once, e.g. '{user}@example.org'")
    try:
        address_for_user("user", pattern)
    except ValueError as error:
        raise ValueError(f"it does not give one plain address for a user named 'user': "
                         f"{error}") from None


__all__ = ["address_for_user", "check_pattern", "parse_address"]
