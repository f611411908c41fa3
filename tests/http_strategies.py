"""Hypothesis settings and strategies shared by the ka.http tests."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROPS = settings(max_examples=150, deadline=None)

TCHARS = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters
VALUE_CHARS = "\t" + "".join(map(chr, range(0x20, 0x7F))) + "".join(map(chr, range(0x80, 0x100)))

# Text made of the characters that matter to the Keep-Alive and Connection grammars.
HEADER_LIKE = st.text(
    alphabet=st.sampled_from(list('timeoutmaxTIMEOUTMAX=,; \t"\\5907-.\u00e9\x00\r\n\u4e2d'))
)
