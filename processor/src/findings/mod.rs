//! ASFF findings (in progress).
