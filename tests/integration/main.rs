//! Integration tests: the real binary, mounted in a scratch directory,
//! driven by other processes the way users drive it.

#[macro_use]
mod util;

mod access;
mod bad_input;
mod cache_control;
mod cached;
mod control;
mod crash_test;
mod data;
mod dir_source;
mod examples;
mod faults;
mod hardening;
mod inspect;
mod lifecycle;
mod mappers;
mod modes;
mod security;
mod startup;
mod toolbox;
mod trace;
