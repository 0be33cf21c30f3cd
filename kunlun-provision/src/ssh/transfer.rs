//! File transfer over SFTP: upload a byte buffer or a local file with a mode, read a remote
//! file. Blocking libssh2 calls, each with the time left of the deadline as its timeout.
//!
//! Invariant: after a successful upload the remote file has exactly the given contents and
//! mode (set explicitly, since the create mode is filtered by the remote umask).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ssh2::{ErrorCode, FileStat, OpenFlags, OpenType, Sftp};

use super::conn::{Conn, Deadline};
use crate::error::{Error, Result};

const CHUNK: usize = 256 * 1024;

/// What to upload.
#[derive(Debug)]
pub(crate) enum Source {
    Bytes(Vec<u8>),
    File(PathBuf),
}

fn open_sftp(conn: &mut Conn, deadline: &Deadline) -> Result<Sftp> {
    conn.blocking(deadline);
    conn.session
        .sftp()
        .map_err(|e| conn.fail(&e, deadline, "starting SFTP"))
}

/// SFTP status errors are about the file; anything else about the connection.
fn file_error(
    conn: &mut Conn,
    e: &ssh2::Error,
    deadline: &Deadline,
    op: &'static str,
    path: &str,
) -> Error {
    match e.code() {
        ErrorCode::SFTP(_) => Error::RemoteFile {
            host: conn.label.clone(),
            op,
            path: path.to_string(),
            reason: e.message().to_string(),
        },
        ErrorCode::Session(_) => conn.fail(e, deadline, op),
    }
}

pub(crate) fn upload(
    conn: &mut Conn,
    deadline: &Deadline,
    source: &Source,
    remote: &str,
    mode: u32,
) -> Result<()> {
    let mut local: Box<dyn Read> = match source {
        Source::Bytes(b) => Box::new(b.as_slice()),
        Source::File(p) => Box::new(
            File::open(p).map_err(|e| Error::Local(format!("opening {}: {e}", p.display())))?,
        ),
    };
    let sftp = open_sftp(conn, deadline)?;
    conn.work_started = true;
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    let mut file = sftp
        .open_mode(
            Path::new(remote),
            flags,
            (mode & 0o7777) as i32,
            OpenType::File,
        )
        .map_err(|e| file_error(conn, &e, deadline, "create", remote))?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = local
            .read(&mut buf)
            .map_err(|e| Error::Local(format!("reading the upload source: {e}")))?;
        if n == 0 {
            break;
        }
        if deadline.expired() {
            conn.healthy = false;
            return Err(deadline.timeout(&conn.label, &format!("upload to {remote}")));
        }
        conn.blocking(deadline);
        file.write_all(&buf[..n])
            .map_err(|e| conn.fail_io(&e, deadline, "writing the remote file"))?;
    }
    conn.blocking(deadline);
    let stat = FileStat {
        size: None,
        uid: None,
        gid: None,
        perm: Some(mode & 0o7777),
        atime: None,
        mtime: None,
    };
    file.setstat(stat)
        .map_err(|e| file_error(conn, &e, deadline, "chmod", remote))?;
    file.close()
        .map_err(|e| file_error(conn, &e, deadline, "close", remote))?;
    Ok(())
}

pub(crate) fn read_file(conn: &mut Conn, deadline: &Deadline, remote: &str) -> Result<Vec<u8>> {
    let sftp = open_sftp(conn, deadline)?;
    conn.work_started = true;
    let mut file = sftp
        .open(Path::new(remote))
        .map_err(|e| file_error(conn, &e, deadline, "open", remote))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        if deadline.expired() {
            conn.healthy = false;
            return Err(deadline.timeout(&conn.label, &format!("reading {remote}")));
        }
        conn.blocking(deadline);
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return Err(conn.fail_io(&e, deadline, "reading the remote file")),
        }
    }
    Ok(out)
}
