#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    lethe::cli::main()
}
