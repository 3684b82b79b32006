from __future__ import annotations

import datetime

from hypothesis import strategies as st
from kio.static.primitive import Records, i64Timedelta

# kio registers hypothesis strategies for its primitive types, but not for the
# opaque `records` bytes; any bytes will do for the message codec.
st.register_type_strategy(Records, st.binary(max_size=64))

# kio's own strategy for INT64 millisecond durations spans all of Python's
# timedelta, beyond what kio round-trips: its writer goes through float seconds
# (exact only below about 2**51 ms) and its native reader refuses values near
# 2**63 µs.  Real fields (delegation token lifetimes, offset retention) hold
# small values or -1, so generate +-2**50 ms (35,000 years).
_I64_DURATION_MS = 2**50
st.register_type_strategy(
    i64Timedelta,
    st.integers(-_I64_DURATION_MS, _I64_DURATION_MS).map(
        lambda ms: i64Timedelta.parse(datetime.timedelta(milliseconds=ms))
    ),
)
