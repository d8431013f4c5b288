//! Reading a task's `stdout.log` / `stderr.log`: the last N lines of each (read backwards in
//! chunks, so a large log costs little), and following new lines until the task has exited.
//! Lines from the two files carry no timestamps, so `tail` yields stdout's lines, then stderr's,
//! and `follow` interleaves them only as finely as its polling.
//!
//! Must not: write to the logs or depend on the daemon being the task's parent.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::exec::{ExecError, LogLine, LogLines, LogOptions, LogStream};

use super::layout::TaskDir;

const CHUNK: u64 = 64 * 1024;
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The last `n` lines of `path` (all with `None`) and the file offset just after them.
fn tail_lines(path: &Path, n: Option<usize>) -> io::Result<(Vec<String>, u64)> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = match n {
        None => 0,
        Some(0) => len,
        Some(n) => {
            // Walk backwards until the n-th newline that is not the file's last byte.
            let mut pos = len;
            let mut seen = 0usize;
            let mut start = 0;
            let mut buf = vec![0u8; CHUNK as usize];
            'outer: while pos > 0 {
                let size = CHUNK.min(pos);
                pos -= size;
                f.seek(SeekFrom::Start(pos))?;
                f.read_exact(&mut buf[..size as usize])?;
                for i in (0..size as usize).rev() {
                    let after = pos + i as u64 + 1;
                    if buf[i] == b'\n' && after != len {
                        seen += 1;
                        if seen == n {
                            start = after;
                            break 'outer;
                        }
                    }
                }
            }
            start
        }
    };
    f.seek(SeekFrom::Start(start))?;
    let mut data = Vec::with_capacity((len - start) as usize);
    f.take(len - start).read_to_end(&mut data)?;
    // A final partial line is returned too; followers continue from the end.
    let text = String::from_utf8_lossy(&data);
    let lines = text.lines().map(str::to_string).collect();
    Ok((lines, len))
}

/// Reads the lines of both logs as `opts` asks; with `follow`, keeps polling until `exit.json`
/// exists and everything written before it has been sent.
pub(crate) fn read_logs(dir: TaskDir, opts: LogOptions) -> Result<LogLines, ExecError> {
    let files = [
        (LogStream::Stdout, dir.stdout()),
        (LogStream::Stderr, dir.stderr()),
    ];
    let mut initial = Vec::new();
    let mut offsets = Vec::new();
    for (stream, path) in &files {
        let (lines, end) = tail_lines(path, opts.tail)
            .map_err(|e| ExecError::io(format!("reading {}", path.display()), e))?;
        initial.extend(lines.into_iter().map(|line| {
            Ok(LogLine {
                stream: *stream,
                line,
            })
        }));
        offsets.push((*stream, path.clone(), end));
    }
    if !opts.follow {
        return Ok(Box::pin(futures::stream::iter(initial)));
    }
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        for item in initial {
            if tx.send(item).await.is_err() {
                return;
            }
        }
        let mut followers: Vec<Follower> = offsets
            .into_iter()
            .map(|(stream, path, offset)| Follower {
                stream,
                path,
                offset,
                partial: Vec::new(),
            })
            .collect();
        loop {
            let exited = dir.exit().exists();
            let mut got_any = false;
            for f in &mut followers {
                match f.poll(exited) {
                    Ok((lines, progressed)) => {
                        got_any |= progressed;
                        for line in lines {
                            if tx
                                .send(Ok(LogLine {
                                    stream: f.stream,
                                    line,
                                }))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(ExecError::io(
                                format!("reading {}", f.path.display()),
                                e,
                            )))
                            .await;
                        return;
                    }
                }
            }
            if exited && !got_any {
                return;
            }
            if !got_any {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

struct Follower {
    stream: LogStream,
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// New complete lines since the last poll, and whether anything was read; with `flush`
    /// (the task has exited) a final partial line once the file is drained.
    fn poll(&mut self, flush: bool) -> io::Result<(Vec<String>, bool)> {
        let mut data = Vec::new();
        match fs::File::open(&self.path) {
            Ok(mut f) => {
                f.seek(SeekFrom::Start(self.offset))?;
                f.take(CHUNK * 4).read_to_end(&mut data)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.offset += data.len() as u64;
        self.partial.extend_from_slice(&data);
        let mut lines = Vec::new();
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let rest = self.partial.split_off(i + 1);
            let line = std::mem::replace(&mut self.partial, rest);
            lines.push(String::from_utf8_lossy(&line[..i]).into_owned());
        }
        if flush && data.is_empty() && !self.partial.is_empty() {
            lines.push(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned());
        }
        Ok((lines, !data.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log");
        let text: String = (1..=10000).map(|i| format!("line {i}\n")).collect();
        fs::write(&p, &text).expect("write");
        let (lines, end) = tail_lines(&p, Some(3)).expect("tail");
        assert_eq!(lines, ["line 9998", "line 9999", "line 10000"]);
        assert_eq!(end, text.len() as u64);
        assert_eq!(tail_lines(&p, None).expect("all").0.len(), 10000);
        assert!(tail_lines(&p, Some(0)).expect("none").0.is_empty());
        assert_eq!(
            tail_lines(&p, Some(20000))
                .expect("more than there is")
                .0
                .len(),
            10000
        );
        fs::write(&p, "a\nb").expect("write");
        assert_eq!(tail_lines(&p, Some(1)).expect("partial").0, ["b"]);
        assert!(tail_lines(&dir.path().join("missing"), Some(1))
            .expect("missing")
            .0
            .is_empty());
    }
}
