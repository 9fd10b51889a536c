//! Integration tests: the real binary, mounted in a scratch directory,
//! driven by other processes the way users drive it.

mod control;
mod data;
mod startup;
mod util;
mod lifecycle;
mod inspect;
mod modes;
