//! Running PostgreSQL programs: a clean environment, captured output, a time limit, and
//! failures turned into `PgError::Command` with the tail of what the program said.

use crate::error::PgError;
use crate::fsx::tail_lines;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

/// Connection and location variables that must not leak from our environment into the
/// programs we run: every target is given explicitly.
const CLEARED_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGDATA",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
];

/// Lines of output kept in error messages.
pub(crate) const TAIL_LINES: usize = 15;

/// A command for `program` with stdin closed, C locale messages, no inherited PG* targets,
/// run from `/` (the OS user may not be able to read the caller's working directory).
pub(crate) fn command(program: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    cmd.env("LC_ALL", "C")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// The synchronous twin of `command`, for the few quick programs run outside async code.
pub(crate) fn std_command(program: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    cmd.env("LC_ALL", "C").current_dir("/").stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion (killing it after `limit`, if given) and returns its output
/// whatever its exit status.
pub(crate) async fn output(
    mut cmd: tokio::process::Command,
    doing: &str,
    limit: Option<Duration>,
) -> Result<Output, PgError> {
    let child = cmd.spawn().map_err(|e| PgError::io(format!("{doing}: run {}", program_of(&cmd)), e))?;
    let wait = child.wait_with_output();
    let out = match limit {
        Some(after) => match tokio::time::timeout(after, wait).await {
            Ok(out) => out,
            // Dropping the future kills the child (kill_on_drop).
            Err(_) => return Err(PgError::Timeout { doing: doing.to_string(), after }),
        },
        None => wait.await,
    };
    out.map_err(|e| PgError::io(format!("{doing}: wait for {}", program_of(&cmd)), e))
}

/// Like `output`, but a non-zero exit is a `PgError::Command` carrying the output's tail.
pub(crate) async fn run(cmd: tokio::process::Command, doing: &str, limit: Option<Duration>) -> Result<Output, PgError> {
    let program = program_of(&cmd);
    let out = output(cmd, doing, limit).await?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(failed(doing, &program, &out, String::new()))
    }
}

/// The `PgError::Command` for a program that exited unsuccessfully; `extra` (e.g. the tail of
/// the server log) is appended to the program's own output.
pub(crate) fn failed(doing: &str, program: &str, out: &Output, extra: String) -> PgError {
    let mut text = combined_output(out);
    if !extra.is_empty() {
        text.push('\n');
        text.push_str(&extra);
    }
    PgError::Command {
        doing: doing.to_string(),
        status: exit_status(program, &out.status),
        output_tail: tail_lines(&text, TAIL_LINES),
    }
}

pub(crate) fn combined_output(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

pub(crate) fn exit_status(program: &str, status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("{program} exited with status {code}"),
        (None, Some(sig)) => format!("{program} was killed by signal {sig}"),
        (None, None) => format!("{program} ended abnormally"),
    }
}

pub(crate) fn program_of(cmd: &tokio::process::Command) -> String {
    let program = cmd.as_std().get_program();
    Path::new(program).file_name().unwrap_or(program).to_string_lossy().into_owned()
}
