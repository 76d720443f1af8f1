//! The `oxinvr` binary: the counting allocator (memory per subsystem in
//! /api/system) and the command line in `oxinvr::cli`.

#[global_allocator]
static ALLOC: oxinvr::base::memory::CountingAlloc = oxinvr::base::memory::CountingAlloc;

fn main() -> std::process::ExitCode {
    oxinvr::cli::main()
}
