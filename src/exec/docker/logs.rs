//! Task logs from the container's log driver: Docker's multiplexed stdout/stderr frames are cut
//! into [`LogLine`]s per stream (a frame may hold part of a line or several lines).
//!
//! Must not: mix the streams' partial lines, or end a followed stream before the daemon does.

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;

use crate::exec::{ExecError, LogLine, LogLines, LogOptions, LogStream};

use super::{container_name, is_not_found, map_err};

/// Splits chunks into lines, keeping each stream's unfinished line apart.
#[derive(Default)]
pub(crate) struct LineSplitter {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LineSplitter {
    /// The complete lines `chunk` finishes.
    pub(crate) fn push(&mut self, stream: LogStream, chunk: &[u8]) -> Vec<LogLine> {
        let buf = match stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
        };
        buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let rest = buf.split_off(i + 1);
            let mut line = std::mem::replace(buf, rest);
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            out.push(LogLine {
                stream,
                line: String::from_utf8_lossy(&line).into_owned(),
            });
        }
        out
    }

    /// What is left without a final newline, once the stream ended.
    pub(crate) fn finish(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        for (stream, buf) in [
            (LogStream::Stdout, &mut self.stdout),
            (LogStream::Stderr, &mut self.stderr),
        ] {
            if !buf.is_empty() {
                out.push(LogLine {
                    stream,
                    line: String::from_utf8_lossy(&std::mem::take(buf)).into_owned(),
                });
            }
        }
        out
    }
}

/// The task container's output (the last `tail` lines, then new ones with `follow`).
pub(crate) async fn container_logs(
    docker: &Docker,
    task_id: &str,
    opts: LogOptions,
) -> Result<LogLines, ExecError> {
    let name = container_name(task_id);
    match docker
        .inspect_container(
            &name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => return Err(ExecError::NotFound(task_id.to_string())),
        Err(e) => return Err(map_err(e, task_id, "inspecting the container")),
    }
    let tail = opts
        .tail
        .map_or_else(|| "all".to_string(), |n| n.to_string());
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(opts.follow)
        .tail(&tail)
        .build();
    let frames = docker.logs(&name, Some(options));
    let task = task_id.to_string();
    let mut splitter = LineSplitter::default();
    let lines = frames
        .map(Some)
        .chain(futures::stream::once(async { None }))
        .flat_map(move |frame| {
            let out: Vec<Result<LogLine, ExecError>> = match frame {
                Some(Ok(LogOutput::StdErr { message })) => splitter
                    .push(LogStream::Stderr, &message)
                    .into_iter()
                    .map(Ok)
                    .collect(),
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    splitter
                        .push(LogStream::Stdout, &message)
                        .into_iter()
                        .map(Ok)
                        .collect()
                }
                Some(Ok(LogOutput::StdIn { .. })) => Vec::new(),
                Some(Err(e)) => vec![Err(map_err(e, &task, "reading the logs"))],
                None => splitter.finish().into_iter().map(Ok).collect(),
            };
            futures::stream::iter(out)
        });
    Ok(lines.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_become_lines_per_stream() {
        let mut s = LineSplitter::default();
        assert!(s.push(LogStream::Stdout, b"hel").is_empty());
        let err = s.push(LogStream::Stderr, b"oops\r\nhalf");
        assert_eq!(
            err,
            vec![LogLine {
                stream: LogStream::Stderr,
                line: "oops".into()
            }]
        );
        let out = s.push(LogStream::Stdout, b"lo\nworld\n");
        let texts: Vec<_> = out.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(texts, ["hello", "world"]);
        let rest = s.finish();
        assert_eq!(
            rest,
            vec![LogLine {
                stream: LogStream::Stderr,
                line: "half".into()
            }]
        );
    }
}
