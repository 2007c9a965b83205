//! The `roll` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(roll::cli::main())
}
