//! Files users name on the command line (a component, an import): only
//! regular files are opened (a directory, a FIFO or a device such as
//! `/dev/zero` is refused before anything is read), each kind has a size
//! cap checked before and while reading, and text is read in lines of a
//! bounded length. Imports only the error type.

use std::io::{BufRead, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// Opens `path`, a regular file of at most `max_bytes` (`what` names it in
/// errors), and returns it limited to `max_bytes + 1` bytes: a reader that
/// sees more than `max_bytes` was given a file that grew after the check.
pub fn open_regular(path: &Path, max_bytes: u64, what: &str) -> Result<std::io::Take<std::fs::File>> {
    let shown = path.display();
    let not_regular = || Error::invalid(format!("cannot read {shown}: not a regular file; {what} must be a file of at most {max_bytes} bytes"));
    // `metadata` follows symlinks and does not open the file, so a FIFO is
    // refused here instead of blocking the open below.
    let meta = std::fs::metadata(path).map_err(|e| Error::invalid(format!("cannot read {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    if meta.len() > max_bytes {
        return Err(too_big(path, &format!("{} bytes", meta.len()), max_bytes, what));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::invalid(format!("cannot read {shown}: {e}")))?;
    // The path may have been replaced between the check and the open: check
    // what was opened too. (A FIFO swapped in just then would still block the
    // open; only someone who controls the path can race it.)
    let opened = file.metadata().map_err(|e| Error::invalid(format!("cannot read {shown}: {e}")))?;
    if !opened.is_file() {
        return Err(not_regular());
    }
    Ok(file.take(max_bytes.saturating_add(1)))
}

/// The error for a file over its cap.
pub fn too_big(path: &Path, size: &str, max_bytes: u64, what: &str) -> Error {
    Error::invalid(format!("cannot read {}: the file is {size}, over the limit of {max_bytes} bytes for {what}", path.display()))
}

/// Reads all of a regular file of at most `max_bytes`.
pub fn read_regular(path: &Path, max_bytes: u64, what: &str) -> Result<Vec<u8>> {
    let mut file = open_regular(path, max_bytes, what)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| Error::invalid(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() as u64 > max_bytes {
        // It grew after the check.
        return Err(too_big(path, &format!("more than {max_bytes} bytes"), max_bytes, what));
    }
    Ok(bytes)
}

/// Lines of at most `max_line` bytes (without the newline) from `reader`,
/// numbered from 1. A longer line is an error, and ends the lines (the rest
/// cannot be split reliably); so is a line that is not UTF-8.
pub struct Lines<R> {
    reader: R,
    max_line: usize,
    number: usize,
    done: bool,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R, max_line: usize) -> Lines<R> {
        Lines { reader, max_line, number: 0, done: false }
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = (usize, Result<String>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.number += 1;
        let mut buf = Vec::new();
        let limit = self.max_line as u64 + 2; // the line, "\r\n"
        match (&mut self.reader).take(limit).read_until(b'\n', &mut buf) {
            Ok(0) => {
                self.done = true;
                None
            }
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                if buf.len() > self.max_line {
                    self.done = true;
                    return Some((
                        self.number,
                        Err(Error::invalid(format!("line {} is longer than {} bytes: the rest is not read", self.number, self.max_line))),
                    ));
                }
                match String::from_utf8(buf) {
                    Ok(line) => Some((self.number, Ok(line))),
                    Err(_) => {
                        self.done = true;
                        Some((self.number, Err(Error::invalid(format!("line {} is not UTF-8: the rest is not read", self.number)))))
                    }
                }
            }
            Err(e) => {
                self.done = true;
                Some((self.number, Err(Error::invalid(format!("cannot read line {}: {e}", self.number)))))
            }
        }
    }
}

/// Reads a secret kept in `path` (a token, a signing key): a regular file
/// only its owner may read (mode 600 or stricter), the secret its trimmed
/// text. With `create`, a missing file is made (mode 600, never replacing
/// one) holding a new random secret, and `Ok((secret, true))` says so.
pub fn read_secret_file(path: &Path, what: &str, create: bool) -> Result<(String, bool)> {
    use std::io::Write;
    let shown = path.display();
    if create && !path.exists() {
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| Error::invalid(format!("cannot create {what} file {shown}: {e}")))?;
        file.write_all(format!("{secret}\n").as_bytes()).map_err(|e| Error::invalid(format!("cannot write {what} file {shown}: {e}")))?;
        return Ok((secret, true));
    }
    let bytes = read_regular(path, 4096, what)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| Error::invalid(format!("cannot read {shown}: {e}")))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::invalid(format!(
                "{what} file {shown} may be read by other users (mode {:o}); make it readable by its owner only: chmod 600 {shown}",
                mode & 0o777
            )));
        }
    }
    let secret = String::from_utf8(bytes).map_err(|_| Error::invalid(format!("{what} file {shown} is not text")))?.trim().to_string();
    if secret.is_empty() {
        return Err(Error::invalid(format!("{what} file {shown} is empty")));
    }
    Ok((secret, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_a_long_one_ends_the_reading() {
        let text = b"a\r\nbb\n\nccccc\ndd\n";
        let got: Vec<(usize, std::result::Result<String, String>)> = Lines::new(&text[..], 4).map(|(n, l)| (n, l.map_err(|e| e.to_string()))).collect();
        assert_eq!(got[..3], [(1, Ok("a".into())), (2, Ok("bb".into())), (3, Ok(String::new()))]);
        assert_eq!(got[3].0, 4);
        assert!(got[3].1.as_ref().unwrap_err().contains("longer than 4 bytes"));
        assert_eq!(got.len(), 4, "nothing after the long line");
        // An endless line (a device, a file without newlines) is not read whole.
        let endless = std::io::BufReader::new(std::io::repeat(b'x'));
        let (n, first) = Lines::new(endless, 1024).next().unwrap();
        assert_eq!(n, 1);
        assert!(first.is_err());
    }
}
