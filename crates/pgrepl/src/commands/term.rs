//! The little a command needs of a terminal: whether a stream is one, its size, and the plain
//! ANSI escapes `status --watch` and the progress line use. No raw mode, no terminal database.

use std::io::IsTerminal;
use std::os::fd::AsRawFd;

/// Switch to the alternate screen and hide the cursor.
pub const ENTER_SCREEN: &str = "\x1b[?1049h\x1b[?25l";
/// Show the cursor and leave the alternate screen: the terminal as it was before.
pub const LEAVE_SCREEN: &str = "\x1b[?25h\x1b[?1049l";
/// Cursor to the top left corner.
pub const HOME: &str = "\x1b[H";
/// Erase from the cursor to the end of the line.
pub const CLEAR_LINE: &str = "\x1b[K";
/// Erase from the cursor to the end of the screen.
pub const CLEAR_BELOW: &str = "\x1b[J";

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// `(columns, rows)` of the terminal behind `stream`, `None` when it is not one.
pub fn size(stream: &impl AsRawFd) -> Option<(usize, usize)> {
    // SAFETY: TIOCGWINSZ writes one winsize into the struct it is given, nothing else.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0 && ws.ws_row > 0).then_some((usize::from(ws.ws_col), usize::from(ws.ws_row)))
}

/// `line` cut to at most `width` characters (every character drawn here takes one column).
pub fn fit(line: &str, width: usize) -> String {
    line.chars().take(width).collect()
}
