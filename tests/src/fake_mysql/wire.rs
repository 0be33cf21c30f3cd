//! The MySQL wire protocol as the fake endpoint speaks it: command codes, capabilities, and
//! the packets of one reply (OK, EOF, ERR, a text result set).

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

pub(super) const COM_QUIT: u8 = 0x01;
pub(super) const COM_INIT_DB: u8 = 0x02;
pub(super) const COM_QUERY: u8 = 0x03;
pub(super) const COM_PING: u8 = 0x0e;
pub(super) const COM_RESET_CONNECTION: u8 = 0x1f;

/// LONG_PASSWORD, FOUND_ROWS, LONG_FLAG, CONNECT_WITH_DB, PROTOCOL_41, TRANSACTIONS,
/// SECURE_CONNECTION, MULTI_STATEMENTS, MULTI_RESULTS, PS_MULTI_RESULTS, PLUGIN_AUTH,
/// CONNECT_ATTRS, PLUGIN_AUTH_LENENC_CLIENT_DATA. No SSL, no DEPRECATE_EOF (classic EOFs).
pub(super) const CAPABILITIES: u32 = 0x003f_a20f;
pub(super) const STATUS_AUTOCOMMIT: u16 = 0x0002;
/// SERVER_MORE_RESULTS_EXISTS: another statement's result follows this one.
pub(super) const STATUS_MORE_RESULTS: u16 = 0x0008;
pub(super) const TYPE_LONGLONG: u8 = 0x08;
pub(super) const TYPE_VAR_STRING: u8 = 0xfd;
pub(super) const UTF8MB4: u8 = 45;
pub(super) const BINARY: u8 = 63;

/// Packets of one reply, written in one go.
pub(super) struct Reply {
    pub(super) buf: Vec<u8>,
    pub(super) seq: u8,
    /// Another statement of a multi-statement query is answered after this one: the OK or
    /// the last EOF that ends this one's result says so.
    pub(super) more: bool,
}

impl Reply {
    pub(super) fn new(seq: u8) -> Reply {
        Reply {
            buf: Vec::with_capacity(256),
            seq,
            more: false,
        }
    }

    pub(super) fn reset(&mut self, seq: u8) {
        self.buf.clear();
        self.seq = seq;
        self.more = false;
    }

    /// The status flags of a packet that ends a statement's result.
    pub(super) fn end_status(&self) -> u16 {
        if self.more {
            STATUS_AUTOCOMMIT | STATUS_MORE_RESULTS
        } else {
            STATUS_AUTOCOMMIT
        }
    }

    pub(super) fn packet(&mut self, fill: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, self.seq]);
        fill(&mut self.buf);
        let len = (self.buf.len() - start - 4) as u32;
        self.buf[start..start + 3].copy_from_slice(&len.to_le_bytes()[..3]);
        self.seq = self.seq.wrapping_add(1);
    }

    pub(super) fn ok(&mut self) {
        let status = self.end_status();
        self.packet(|p| {
            p.extend_from_slice(&[0, 0, 0]);
            p.extend_from_slice(&status.to_le_bytes());
            p.extend_from_slice(&[0, 0]);
        });
    }

    pub(super) fn eof(&mut self, status: u16) {
        self.packet(|p| {
            p.extend_from_slice(&[0xfe, 0, 0]);
            p.extend_from_slice(&status.to_le_bytes());
        });
    }

    pub(super) fn err(&mut self, code: u16, state: &str, msg: &str) {
        self.packet(|p| {
            p.push(0xff);
            p.extend_from_slice(&code.to_le_bytes());
            p.push(b'#');
            p.extend_from_slice(state.as_bytes());
            p.extend_from_slice(msg.as_bytes());
        });
    }

    /// A text-protocol result set: each column typed as a number when all its values are.
    pub(super) fn result_set(&mut self, cols: &[&str], rows: &[Vec<Option<String>>]) {
        self.packet(|p| lenenc_int(p, cols.len() as u64));
        for (i, name) in cols.iter().enumerate() {
            let numeric = !rows.is_empty()
                && rows.iter().all(|r| {
                    r.get(i)
                        .and_then(Option::as_deref)
                        .is_none_or(|v| v.parse::<i64>().is_ok())
                });
            self.packet(|p| {
                for s in ["def", "", "", ""] {
                    lenenc_str(p, s.as_bytes());
                }
                lenenc_str(p, name.as_bytes());
                lenenc_str(p, name.as_bytes());
                p.push(0x0c);
                let (charset, len, ty, flags): (u8, u32, u8, u16) = if numeric {
                    (BINARY, 21, TYPE_LONGLONG, 0x0080 | 0x8000)
                } else {
                    (UTF8MB4, 1024, TYPE_VAR_STRING, 0)
                };
                p.extend_from_slice(&u16::from(charset).to_le_bytes());
                p.extend_from_slice(&len.to_le_bytes());
                p.push(ty);
                p.extend_from_slice(&flags.to_le_bytes());
                p.extend_from_slice(&[0, 0, 0]);
            });
        }
        self.eof(STATUS_AUTOCOMMIT);
        for r in rows {
            self.packet(|p| {
                for v in r {
                    match v {
                        Some(s) => lenenc_str(p, s.as_bytes()),
                        None => p.push(0xfb),
                    }
                }
            });
        }
        let status = self.end_status();
        self.eof(status);
    }
}

pub(super) fn lenenc_int(p: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => p.push(n as u8),
        251..=0xffff => {
            p.push(0xfc);
            p.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            p.push(0xfd);
            p.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            p.push(0xfe);
            p.extend_from_slice(&n.to_le_bytes());
        }
    }
}

pub(super) fn lenenc_str(p: &mut Vec<u8>, s: &[u8]) {
    lenenc_int(p, s.len() as u64);
    p.extend_from_slice(s);
}

/// Reads one packet into `buf`; `None` at a clean end of stream.
pub(super) async fn read_packet(
    s: &mut BufStream<TcpStream>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<u8>> {
    let mut head = [0u8; 4];
    match s.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    buf.resize(len, 0);
    s.read_exact(buf).await?;
    Ok(Some(head[3]))
}

pub(super) async fn send(s: &mut BufStream<TcpStream>, r: &Reply) -> std::io::Result<()> {
    s.write_all(&r.buf).await?;
    s.flush().await
}
