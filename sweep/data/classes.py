"""A class named on the command line (or in a call) resolved to its id."""

from __future__ import annotations

from collections.abc import Sequence

from sweep.errors import SweepError


def resolve_class(name_or_id: str | int, class_names: Sequence[str], *,
                  plurals: bool = False, what: str = "") -> int:
    """A class id from a name (case-insensitive) or an id into `class_names`.

    Args:
      plurals: also match "cat" to a class named "cats" and back (the course
        project's folders are plural).
      what: where the names come from, for the error ("in the results").
    """
    s = str(name_or_id).strip()
    lowered = [c.lower() for c in class_names]
    wanted = s.lower()
    candidates = (wanted, wanted + "s", wanted.removesuffix("s")) if plurals else (
        wanted,)
    for candidate in candidates:
        if candidate in lowered:
            return lowered.index(candidate)
    if s.lstrip("-").isdigit():
        i = int(s)
        if 0 <= i < len(class_names):
            return i
        raise SweepError(f"class id {i} is out of range 0..{len(class_names) - 1}")
    where = f" {what}" if what else ""
    raise SweepError(f"unknown class {s!r}{where}; classes are: "
                     f"{', '.join(class_names)}")
