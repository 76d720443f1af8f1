//! Reading command lines on a console: a small line editor (history with the
//! up/down arrows, left/right, Home/End, Ctrl-A/E/U/W/C/D, Tab completion of
//! the first word) when stdin is a terminal and `TERM` is set and not `dumb`;
//! otherwise plain line reading, where the tty driver does the editing and
//! any backspace or arrow-key bytes that got through anyway are applied or
//! dropped.
//!
//! Invariants: the terminal is switched to non-canonical mode only while a
//! line is being read and is always restored (a guard restores it on every
//! exit path), so commands run with the terminal as it was; output uses only
//! `\r`, `\x1b[K` (erase to end of line) and `\x1b[ND` (cursor left), which
//! every VT100-like terminal knows.

use std::io::{self, BufRead, IsTerminal, Read, Write};

/// What reading a line gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Line(String),
    /// Ctrl-C: the line was dropped.
    Interrupted,
    /// End of input (Ctrl-D on an empty line, or stdin closed).
    Eof,
}

/// What feeding one byte to the editor asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to show (in the middle of an escape sequence or a character).
    None,
    Redraw,
    Bell,
    Done(Input),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    No,
    Started,
    /// `ESC [` or `ESC O`, with the digits seen so far.
    Csi(u8),
}

/// The line being edited (pure: no I/O, so it is tested byte by byte).
#[derive(Debug)]
pub struct Editor {
    buf: Vec<char>,
    cursor: usize,
    esc: Esc,
    utf8: Vec<u8>,
    /// Index into history while browsing it, and the line being typed before.
    browsing: Option<usize>,
    draft: Vec<char>,
}

impl Default for Editor {
    fn default() -> Self {
        Editor::new()
    }
}

impl Editor {
    pub fn new() -> Editor {
        Editor { buf: Vec::new(), cursor: 0, esc: Esc::No, utf8: Vec::new(), browsing: None, draft: Vec::new() }
    }

    pub fn line(&self) -> String {
        self.buf.iter().collect()
    }

    /// What to write to show `prompt` and the line with the cursor in place.
    pub fn render(&self, prompt: &str) -> String {
        let mut s = format!("\r{prompt}{}\x1b[K", self.line());
        let back = self.buf.len() - self.cursor;
        if back > 0 {
            s.push_str(&format!("\x1b[{back}D"));
        }
        s
    }

    fn set(&mut self, text: Vec<char>) {
        self.cursor = text.len();
        self.buf = text;
    }

    fn insert(&mut self, c: char) -> Action {
        self.buf.insert(self.cursor, c);
        self.cursor += 1;
        Action::Redraw
    }

    fn finish(&mut self, input: Input) -> Action {
        self.buf.clear();
        self.cursor = 0;
        self.browsing = None;
        self.esc = Esc::No;
        Action::Done(input)
    }

    fn history(&mut self, history: &[String], up: bool) -> Action {
        let next = match (self.browsing, up) {
            (None, true) if !history.is_empty() => {
                self.draft = self.buf.clone();
                Some(history.len() - 1)
            }
            (Some(i), true) if i > 0 => Some(i - 1),
            (Some(i), false) if i + 1 < history.len() => Some(i + 1),
            (Some(_), false) => {
                self.browsing = None;
                let d = std::mem::take(&mut self.draft);
                self.set(d);
                return Action::Redraw;
            }
            _ => return Action::Bell,
        };
        self.browsing = next;
        if let Some(i) = next {
            self.set(history[i].chars().collect());
        }
        Action::Redraw
    }

    fn complete(&mut self, words: &[&str]) -> Action {
        let typed: String = self.buf.iter().collect();
        if typed.contains(' ') || self.cursor != self.buf.len() {
            return Action::Bell;
        }
        let hits: Vec<&&str> = words.iter().filter(|w| w.starts_with(&typed)).collect();
        match hits.as_slice() {
            [one] => {
                self.set(format!("{one} ").chars().collect());
                Action::Redraw
            }
            _ => Action::Bell,
        }
    }

    /// Feeds one input byte.
    pub fn feed(&mut self, b: u8, history: &[String], words: &[&str]) -> Action {
        match self.esc {
            Esc::Started => {
                self.esc = if b == b'[' || b == b'O' { Esc::Csi(0) } else { Esc::No };
                return Action::None;
            }
            Esc::Csi(n) => {
                if b.is_ascii_digit() {
                    self.esc = Esc::Csi(n.saturating_mul(10).saturating_add(b - b'0'));
                    return Action::None;
                }
                self.esc = Esc::No;
                return match (b, n) {
                    (b'A', _) => self.history(history, true),
                    (b'B', _) => self.history(history, false),
                    (b'C', _) if self.cursor < self.buf.len() => {
                        self.cursor += 1;
                        Action::Redraw
                    }
                    (b'D', _) if self.cursor > 0 => {
                        self.cursor -= 1;
                        Action::Redraw
                    }
                    (b'H', _) | (b'~', 1 | 7) => {
                        self.cursor = 0;
                        Action::Redraw
                    }
                    (b'F', _) | (b'~', 4 | 8) => {
                        self.cursor = self.buf.len();
                        Action::Redraw
                    }
                    (b'~', 3) if self.cursor < self.buf.len() => {
                        self.buf.remove(self.cursor);
                        Action::Redraw
                    }
                    _ => Action::Bell,
                };
            }
            Esc::No => {}
        }
        if !self.utf8.is_empty() || b >= 0x80 {
            self.utf8.push(b);
            let need = match self.utf8[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            if self.utf8.len() < need {
                return Action::None;
            }
            let bytes = std::mem::take(&mut self.utf8);
            return match std::str::from_utf8(&bytes).ok().and_then(|s| s.chars().next()) {
                Some(c) => self.insert(c),
                None => Action::Bell,
            };
        }
        match b {
            b'\r' | b'\n' => {
                let line = self.line();
                self.finish(Input::Line(line))
            }
            0x1b => {
                self.esc = Esc::Started;
                Action::None
            }
            0x7f | 0x08 if self.cursor > 0 => {
                self.cursor -= 1;
                self.buf.remove(self.cursor);
                Action::Redraw
            }
            0x03 => self.finish(Input::Interrupted),
            0x04 if self.buf.is_empty() => self.finish(Input::Eof),
            0x04 if self.cursor < self.buf.len() => {
                self.buf.remove(self.cursor);
                Action::Redraw
            }
            0x01 => {
                self.cursor = 0;
                Action::Redraw
            }
            0x05 => {
                self.cursor = self.buf.len();
                Action::Redraw
            }
            0x15 => {
                self.buf.drain(..self.cursor);
                self.cursor = 0;
                Action::Redraw
            }
            0x17 => {
                let mut start = self.cursor;
                while start > 0 && self.buf[start - 1] == ' ' {
                    start -= 1;
                }
                while start > 0 && self.buf[start - 1] != ' ' {
                    start -= 1;
                }
                self.buf.drain(start..self.cursor);
                self.cursor = start;
                Action::Redraw
            }
            b'\t' => self.complete(words),
            0x20..=0x7e => self.insert(char::from(b)),
            _ => Action::Bell,
        }
    }
}

/// Applies backspaces and drops escape sequences and other control bytes in
/// a line read in plain mode (a terminal whose erase key the tty driver did
/// not know, arrow keys on a dumb terminal).
pub fn clean_plain_line(raw: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x08' | '\x7f' => {
                out.pop();
            }
            '\x1b' => {
                // ESC [ digits letter, ESC O letter, or a lone ESC.
                if matches!(chars.peek(), Some('[') | Some('O')) {
                    chars.next();
                    while let Some(&n) = chars.peek() {
                        chars.next();
                        if !n.is_ascii_digit() && n != ';' {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.into_iter().collect()
}

/// Reads lines from stdin, editing them when the terminal allows it.
pub struct LineReader {
    edit: bool,
    history: Vec<String>,
    editor: Editor,
    words: Vec<&'static str>,
}

const HISTORY: usize = 100;

impl LineReader {
    /// `words` are offered by Tab for the first word.
    pub fn new(words: Vec<&'static str>) -> LineReader {
        let term = std::env::var("TERM").unwrap_or_default();
        let edit = io::stdin().is_terminal() && !term.is_empty() && term != "dumb";
        LineReader { edit, history: Vec::new(), editor: Editor::new(), words }
    }

    /// Whether the editor is in use (else plain lines).
    pub fn editing(&self) -> bool {
        self.edit
    }

    pub fn read_line(&mut self, prompt: &str) -> io::Result<Input> {
        let input = if self.edit {
            match RawMode::enter() {
                Ok(guard) => {
                    let r = self.read_edited(prompt);
                    drop(guard);
                    r?
                }
                Err(_) => {
                    // The terminal refused: degrade for good.
                    self.edit = false;
                    self.read_plain(prompt)?
                }
            }
        } else {
            self.read_plain(prompt)?
        };
        if let Input::Line(l) = &input {
            if !l.trim().is_empty() && self.history.last() != Some(l) {
                if self.history.len() == HISTORY {
                    self.history.remove(0);
                }
                self.history.push(l.clone());
            }
        }
        Ok(input)
    }

    fn read_plain(&mut self, prompt: &str) -> io::Result<Input> {
        let mut out = io::stdout().lock();
        out.write_all(prompt.as_bytes())?;
        out.flush()?;
        drop(out);
        let mut raw = Vec::new();
        let n = io::stdin().lock().read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Ok(Input::Eof);
        }
        let text = String::from_utf8_lossy(&raw);
        Ok(Input::Line(clean_plain_line(text.trim_end_matches(['\n', '\r']))))
    }

    fn read_edited(&mut self, prompt: &str) -> io::Result<Input> {
        let mut out = io::stdout().lock();
        out.write_all(self.editor.render(prompt).as_bytes())?;
        out.flush()?;
        let mut stdin = io::stdin().lock();
        let mut byte = [0u8; 1];
        let words: Vec<&str> = self.words.clone();
        loop {
            let n = match stdin.read(&mut byte) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                out.write_all(b"\r\n")?;
                return Ok(Input::Eof);
            }
            match self.editor.feed(byte[0], &self.history, &words) {
                Action::None => {}
                Action::Redraw => out.write_all(self.editor.render(prompt).as_bytes())?,
                Action::Bell => out.write_all(b"\x07")?,
                Action::Done(input) => {
                    if input == Input::Interrupted {
                        out.write_all(b"^C")?;
                    }
                    out.write_all(b"\r\n")?;
                    out.flush()?;
                    return Ok(input);
                }
            }
            out.flush()?;
        }
    }
}

/// Line input without echo (passwords) while alive; restores the terminal on drop.
pub struct EchoOff {
    saved: Option<nix::sys::termios::Termios>,
}

impl EchoOff {
    /// Turns echo off on stdin if it is a terminal (else does nothing).
    #[allow(clippy::new_without_default)] // it changes the terminal: not a default value
    pub fn new() -> EchoOff {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        let stdin = io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else { return EchoOff { saved: None } };
        let mut t = saved.clone();
        t.local_flags.remove(LocalFlags::ECHO);
        let ok = tcsetattr(&stdin, SetArg::TCSADRAIN, &t).is_ok();
        EchoOff { saved: ok.then_some(saved) }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(io::stdin(), nix::sys::termios::SetArg::TCSADRAIN, saved);
        }
    }
}

/// Non-canonical, no-echo input while alive; restores the terminal on drop.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> nix::Result<RawMode> {
        use nix::sys::termios::{tcgetattr, tcsetattr, InputFlags, LocalFlags, SetArg, SpecialCharacterIndices};
        let stdin = io::stdin();
        let saved = tcgetattr(&stdin)?;
        let mut t = saved.clone();
        t.local_flags.remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG | LocalFlags::IEXTEN);
        t.input_flags.remove(InputFlags::IXON | InputFlags::ICRNL | InputFlags::INLCR);
        t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        tcsetattr(&stdin, SetArg::TCSADRAIN, &t)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(io::stdin(), nix::sys::termios::SetArg::TCSADRAIN, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(e: &mut Editor, bytes: &[u8], history: &[String]) -> Vec<Action> {
        bytes
            .iter()
            .map(|b| e.feed(*b, history, &["status", "streams", "help"]))
            .filter(|a| *a != Action::None)
            .collect()
    }

    fn typed(bytes: &[u8], history: &[String]) -> Option<Input> {
        let mut e = Editor::new();
        feed_all(&mut e, bytes, history).into_iter().find_map(|a| match a {
            Action::Done(i) => Some(i),
            _ => None,
        })
    }

    #[test]
    fn typing_and_editing() {
        assert_eq!(typed(b"status\r", &[]), Some(Input::Line("status".into())));
        assert_eq!(typed(b"statsu\x7f\x7fus\r", &[]), Some(Input::Line("status".into())));
        // Left arrow twice, insert, End, append.
        assert_eq!(typed(b"sttus\x1b[D\x1b[D\x1b[Da\x1b[Fx\r", &[]), Some(Input::Line("statusx".into())));
        // Ctrl-A, Delete key, Ctrl-E.
        assert_eq!(typed(b"xstatus\x01\x1b[3~\x05\r", &[]), Some(Input::Line("status".into())));
        // Ctrl-U kills to the start, Ctrl-W a word.
        assert_eq!(typed(b"garbage\x15help\r", &[]), Some(Input::Line("help".into())));
        assert_eq!(typed(b"streams add cam\x17list\r", &[]), Some(Input::Line("streams add list".into())));
        assert_eq!(typed(b"abc\x03", &[]), Some(Input::Interrupted));
        assert_eq!(typed(b"\x04", &[]), Some(Input::Eof));
        assert_eq!(typed("caf\u{e9}\r".as_bytes(), &[]), Some(Input::Line("caf\u{e9}".into())));
        // Backspace at the start rings the bell; nothing breaks.
        let mut e = Editor::new();
        assert_eq!(feed_all(&mut e, b"\x7f", &[]), vec![Action::Bell]);
    }

    #[test]
    fn history_and_completion() {
        let h = vec!["status".to_string(), "streams list".to_string()];
        assert_eq!(typed(b"\x1b[A\r", &h), Some(Input::Line("streams list".into())));
        assert_eq!(typed(b"\x1b[A\x1b[A\r", &h), Some(Input::Line("status".into())));
        assert_eq!(typed(b"he\x1b[A\x1b[B\r", &h), Some(Input::Line("he".into())));
        assert_eq!(typed(b"\x1bOA\r", &h), Some(Input::Line("streams list".into())));
        assert_eq!(typed(b"he\tx\r", &h), Some(Input::Line("help x".into())));
        let mut e = Editor::new();
        assert!(feed_all(&mut e, b"st\t", &h).contains(&Action::Bell), "ambiguous");
    }

    #[test]
    fn rendering_places_the_cursor() {
        let mut e = Editor::new();
        feed_all(&mut e, b"abc\x1b[D", &[]);
        assert_eq!(e.render("> "), "\r> abc\x1b[K\x1b[1D");
    }

    #[test]
    fn plain_lines_are_cleaned() {
        assert_eq!(clean_plain_line("statsu\x08\x08us"), "status");
        assert_eq!(clean_plain_line("st\x7fstatus"), "sstatus");
        assert_eq!(clean_plain_line("\x1b[Astatus\x1b[1;5C"), "status");
        assert_eq!(clean_plain_line("a\tb\x07"), "a b");
    }
}
