//! The advlens binary: no arguments opens the app, otherwise a subcommand runs headless.

fn main() -> std::process::ExitCode {
    advlens::cli::main(advlens::cli::AppEntry {
        run: advlens::app::run,
        bench: advlens::app::run_bench,
    })
}
