"""Sizes as people write them ("512KiB", "1.5 MiB", "24 MB", "16384"),
read by everything that takes a size from a person: `ctracemalloc run
--sample`, CTRACEMALLOC_SAMPLE, and the pytest plugin's limits (issue 20).
Imported at interpreter startup by startup tracing: the standard library's
re only, nothing else.

parse_size(text) gives the number of bytes, or raises ValueError with a
sentence that says what a size looks like; size_text(n) writes n back in
the largest unit that divides it exactly (524288 -> "512 KiB").
"""
import re

# The units, as people write them; their case does not matter (kb, Kb,
# KB; kib, KiB). KB, MB, GB are powers of 1000, KiB, MiB, GiB of 1024.
UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
         "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3}

SIZE = re.compile(r"([0-9]+)(?:\.([0-9]+))?\s*([A-Za-z]*)", re.ASCII)

WHAT_A_SIZE_IS = ("bytes, or a number and a unit: B, KB, MB, GB (of 1000), "
                  "KiB, MiB, GiB (of 1024), as in 512KiB or 1.5 MB")


def parse_size(text):
    """The number of bytes text says (an int >= 0): digits, perhaps a
    fraction, perhaps spaces, perhaps a unit. With a unit larger than a
    byte, a fraction is rounded to the nearest byte ("0.1 KiB" is 102);
    a fraction of a byte is not a size. An int (not a bool) >= 0 is its
    own number of bytes. ValueError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    match = SIZE.fullmatch(text.strip()) if isinstance(text, str) else None
    unit = UNITS.get(match.group(3).lower()) if match else None
    if unit is None:
        raise ValueError("not a size: %r (%s)" % (text, WHAT_A_SIZE_IS))
    whole, fraction = match.group(1), match.group(2) or ""
    # exact arithmetic: 1.1 MB is 1100000 bytes, not 1100000.0000000002
    scaled = int(whole + fraction) * unit
    ten_power = 10 ** len(fraction)
    if unit == 1 and fraction.strip("0"):
        raise ValueError("not a whole number of bytes: %r" % text)
    return (2 * scaled + ten_power) // (2 * ten_power)


def size_text(size):
    """size in the largest unit that divides it exactly, binary units
    first: 524288 -> "512 KiB", 1000000 -> "1 MB", 1234 -> "1234 B"."""
    for name in ("GiB", "GB", "MiB", "MB", "KiB", "KB"):
        unit = UNITS[name.lower()]
        if size and size % unit == 0:
            return "%d %s" % (size // unit, name)
    return "%d B" % size
