//! What a command writes for its user: lines on stdout (the `outln!` macro),
//! pretty JSON, and lines on stderr. Owns nothing else; the CLI, `weir demo`
//! and `weir bench` print through it. A closed stdout ends the command
//! quietly; an unwritable stderr loses the line, never the process.

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => outln!("{s}"),
        Err(e) => errln(format_args!("error: cannot print JSON: {e}")),
    }
}

/// Writes a line on stdout (the `outln!` macro). When stdout is closed (the
/// reader of a pipe went away) the command is over: exit 0 quietly, as `ls`
/// does. When it cannot be written otherwise (a full disk), exit 1 saying so.
/// Everything a command changes is committed before it prints, so nothing is
/// left half-done.
pub fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|_| stdout.write_all(b"\n")).and_then(|_| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        errln(format_args!("error: cannot write the output: {e}"));
        std::process::exit(1);
    }
}

/// Writes a line on stderr; a stderr that cannot be written loses the line,
/// never the process.
pub fn errln(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_fmt(args).and_then(|_| stderr.write_all(b"\n"));
}
