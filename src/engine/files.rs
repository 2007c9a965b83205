//! The release's files on a host: backed up before they change, staged beside their targets
//! while the service runs, put in place (one rename each) while it is stopped, and written
//! back by a rollback.
//!
//! A path is the release's (rendered in the plan for the host); `~/x` and
//! relative paths are in the SSH user's home. Contents travel on the command's standard
//! input, never in its command line, so a file of any size (and any bytes) goes through. A
//! file written without a `mode` keeps the mode of the file it replaces.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{Done, Engine, Planned, StepError, record};
use crate::journal::Backup;
use crate::remote::quote;

/// A file of the release for one host: where, what, and which mode.
#[derive(Debug, Clone)]
pub(super) struct HostFile {
    /// The path on the host, placeholders filled in.
    pub path: String,
    pub content: Vec<u8>,
    pub mode: Option<u32>,
}

/// Where a file is staged before the stop.
fn staged(path: &str) -> String {
    format!("{path}.roll-staged")
}

/// A path as the shell on the host needs it: `~/x` is `x` (commands start in the home
/// directory), `~` is `.`; anything else is as written. Quoted.
pub(super) fn host_path(path: &str) -> String {
    let path = match path {
        "~" => ".",
        p => p.strip_prefix("~/").unwrap_or(p),
    };
    quote(path)
}

impl<P: Planned> Engine<P> {
    /// Saves every file the release replaces on a host (its content and mode, or that it
    /// did not exist).
    pub(super) async fn backup_files(&self, name: &str) -> Result<(), StepError> {
        for file in &self.commands_of(name)?.files {
            let path = file.path.clone();
            let at = host_path(&path);
            let script = format!(
                "if [ -f {at} ]; then printf 'present %s\\n' \"$(stat -c %a {at})\"; \
                 base64 < {at} | tr -d '\\n'; else echo absent; fi"
            );
            let output = self
                .connection(name)?
                .run("read file", &script, self.plan.rendered().command_timeout)
                .await?;
            if !output.success() {
                return Err(StepError {
                    output: Some(record("read file", &output)),
                    ..StepError::from(format!("cannot read {path}"))
                });
            }
            let (head, body) = output
                .stdout
                .split_once('\n')
                .unwrap_or((&output.stdout, ""));
            let item = match head.strip_prefix("present ") {
                Some(mode) => {
                    let bytes = BASE64.decode(body.trim()).map_err(|e| {
                        StepError::from(format!("cannot read {path}: bad base64 ({e})"))
                    })?;
                    Backup::file(path, Some(bytes), u32::from_str_radix(mode.trim(), 8).ok())
                }
                None => Backup::file(path, None, None),
            };
            self.save(name, item).await?;
        }
        Ok(())
    }

    /// The files this host gets: those marked `only_if_present` only where they existed
    /// before.
    async fn files_for(&self, name: &str) -> Result<Vec<HostFile>, StepError> {
        let mut files = vec![];
        for file in &self.commands_of(name)?.files {
            let path = file.path.clone();
            if file.only_if_present {
                let existed = self.backups.lock().await.iter().any(|(h, b)| {
                    h == name
                        && matches!(b, Backup::File { path: p, content: Some(_), .. } if *p == path)
                });
                if !existed {
                    continue;
                }
            }
            files.push(HostFile {
                path,
                content: file.content.clone().into_bytes(),
                mode: file.mode,
            });
        }
        Ok(files)
    }

    /// Writes the release's files beside their targets (`<path>.roll-staged`), while the
    /// service still runs.
    pub(super) async fn stage(&self, name: &str) -> Result<Done, StepError> {
        let files = self.files_for(name).await?;
        for file in &files {
            self.write_file(name, &staged(&file.path), &file.path, file)
                .await?;
        }
        Ok(Done::new(if files.is_empty() {
            "no files".to_string()
        } else {
            files
                .iter()
                .map(|f| staged(&f.path))
                .collect::<Vec<_>>()
                .join(", ")
        }))
    }

    /// Puts the staged files in place (one rename each, one command for all); a file whose
    /// staged copy is gone (a resume after the rename) is written again.
    pub(super) async fn deploy(&self, name: &str) -> Result<Done, StepError> {
        let files = self.files_for(name).await?;
        if files.is_empty() {
            return Ok(Done::new("no files"));
        }
        let mut script = String::new();
        for (i, file) in files.iter().enumerate() {
            let (from, to) = (host_path(&staged(&file.path)), host_path(&file.path));
            script.push_str(&format!(
                "if [ -f {from} ]; then mv {from} {to}; else echo {i}; fi\n"
            ));
        }
        let output = self
            .connection(name)?
            .run(
                "put files in place",
                &script,
                self.plan.rendered().command_timeout,
            )
            .await?;
        if !output.success() {
            return Err(StepError {
                output: Some(record("put files in place", &output)),
                ..StepError::from("cannot put the staged files in place")
            });
        }
        let missing: Vec<usize> = output
            .stdout
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        for (i, file) in files.iter().enumerate() {
            if missing.contains(&i) {
                self.write_file(name, &file.path, &file.path, file).await?;
            }
        }
        Ok(Done::new(
            files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ))
    }

    /// Puts a backed-up file back as it was (written again, or removed when it did not
    /// exist).
    pub(super) async fn restore_file(&self, name: &str, path: &str) -> Result<(), StepError> {
        let backup = self.backups.lock().await.iter().find_map(|(h, b)| match b {
            Backup::File { path: p, .. } if h == name && p == path => b.file_content(),
            _ => None,
        });
        match backup {
            Some((Some(content), mode)) => {
                let file = HostFile {
                    path: path.to_string(),
                    content,
                    mode,
                };
                self.write_file(name, path, path, &file).await
            }
            Some((None, _)) => {
                let script = format!("rm -f {}", host_path(path));
                let output = self
                    .connection(name)?
                    .run("remove file", &script, self.plan.rendered().command_timeout)
                    .await?;
                if output.success() {
                    Ok(())
                } else {
                    Err(StepError {
                        output: Some(record("remove file", &output)),
                        ..StepError::from(format!("cannot remove {path}"))
                    })
                }
            }
            None => Err(StepError::from(format!("no backup of {path}"))),
        }
    }

    /// Writes `file`'s content at `path` on a host atomically (a temporary file beside it,
    /// then a rename), streamed on standard input. Its mode is the file's `mode`, else that
    /// of `like` (the file it will replace) when it exists.
    async fn write_file(
        &self,
        name: &str,
        path: &str,
        like: &str,
        file: &HostFile,
    ) -> Result<(), StepError> {
        let target = host_path(path);
        let like = host_path(like);
        let tmp = host_path(&format!("{path}.roll-new"));
        let mut script = format!("set -e\nmkdir -p \"$(dirname {target})\"\ncat > {tmp}\n");
        match file.mode {
            Some(mode) => script.push_str(&format!("chmod {mode:o} {tmp}\n")),
            None => script.push_str(&format!(
                "if [ -e {like} ]; then chmod \"$(stat -c %a {like})\" {tmp}; fi\n"
            )),
        }
        script.push_str(&format!("mv {tmp} {target}\n"));
        let output = self
            .connection(name)?
            .run_with_input(
                "write file",
                &script,
                Some(&file.content),
                self.plan.rendered().command_timeout,
            )
            .await?;
        if output.success() {
            Ok(())
        } else {
            Err(StepError {
                output: Some(record("write file", &output)),
                ..StepError::from(format!("cannot write {path}"))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_paths_are_relative_to_the_login_directory() {
        assert_eq!(host_path("~/.config/x.conf"), ".config/x.conf");
        assert_eq!(host_path("~"), ".");
        assert_eq!(host_path("/etc/x"), "/etc/x");
        assert_eq!(host_path("a b"), "'a b'");
        assert_eq!(host_path("~user/x"), "'~user/x'");
    }
}
