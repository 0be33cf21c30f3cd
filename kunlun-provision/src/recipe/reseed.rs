//! Reseeding an installed instance in place (a replica rebuild): the scripts that set its data
//! aside on the same machine, put it back, drop it, and copy a consistent physical snapshot of
//! another instance of the same recipe into it (streamed from the source machine's backup to
//! the target machine's extract). The engine runs them over SSH in the order it decides; it
//! never sees the server's file layout.
//!
//! Invariants:
//! - setting aside is a `mv` of the instance's own files inside its own directory (an atomic
//!   rename, nothing copied), tagged with the job that did it, and every script is idempotent:
//!   putting back after a set-aside that was cut short restores exactly what was moved;
//! - the restore refuses a data dir that is not empty, so it never mixes two data sets;
//! - the snapshot is only complete once the restore printed its GTID line (after the backup
//!   tool's own `completed OK!` on both sides and its marker written).

use super::{sh_quote, validate_base_dir, MISSING_EXIT, MISSING_MARK};
use crate::error::{Error, Result};
use crate::ssh::Output;

/// The line the restore prints: the GTID position the snapshot is at.
pub const SNAPSHOT_GTID: &str = "snapshot-gtid=";

/// Reseeding scripts of a recipe ([`Recipe::reseed`]). `base` is the instance dir (checked by
/// [`validate_base_dir`]), `tag` the rebuild's own tag (digits).
pub trait Reseed: Send + Sync {
    /// Programs the physical snapshot needs on the source and on the target machine.
    fn snapshot_programs(&self) -> Vec<String>;

    /// Programs a stored snapshot compressed with `compression` needs: the snapshot's, and the
    /// compressor (checked before a backup starts, so a missing one is named up front).
    fn stored_snapshot_programs(&self, compression: Compression) -> Vec<String>;

    /// Prints `data_kb=<size of the instance's data>` and `free_kb=<free space where its
    /// directory is>`; exits [`MISSING_EXIT`] when `programs` are missing (empty: none
    /// checked). Read-only.
    fn space_script(&self, base: &str, programs: &[String]) -> Result<String>;

    /// Prints one `sample <file size> <sample bytes> <compressed bytes>` line for each of the
    /// instance's [`SAMPLE_FILES`] largest table files over 1 MB: a 4 MB chunk from the middle
    /// of the file, raw and after [`Compression::Zstd`]'s compressor at the stored snapshots'
    /// level (see [`estimated_ratio`]). Read-only; zstd must be there (see
    /// [`Reseed::stored_snapshot_programs`]).
    fn compressibility_script(&self, base: &str) -> Result<String>;

    /// Moves the instance's data (and logs, and its initialised marker) aside under `tag` and
    /// leaves empty directories in their place. The server must be stopped.
    fn set_aside_script(&self, base: &str, tag: &str) -> Result<String>;

    /// Undoes [`Reseed::set_aside_script`] of `tag`: whatever was moved aside replaces what is
    /// in its place now (a partial copy). The server must be stopped.
    fn put_back_script(&self, base: &str, tag: &str) -> Result<String>;

    /// Removes every set-aside copy of the instance (any tag).
    fn drop_aside_script(&self, base: &str) -> Result<String>;

    /// Run on the source machine: a consistent online snapshot of the (running) instance in
    /// `base`, written to stdout; on success its last stderr line is [`SNAPSHOT_GTID`]`<pos>`
    /// (the snapshot's GTID position, as the backup tool logged it; empty without GTIDs).
    fn backup_script(&self, base: &str, compression: Compression) -> Result<String>;

    /// Run on the target machine, the backup on stdin (as [`Reseed::backup_script`] wrote it
    /// with `compression`): extracts it into the (empty) data dir of the stopped instance in
    /// `base`, makes it consistent and prints [`SNAPSHOT_GTID`]`<pos>`.
    fn restore_script(&self, base: &str, compression: Compression) -> Result<String>;

    /// Run on a primary's machine: writes its binary log file `file` (a name from `SHOW
    /// BINARY LOGS`, checked by [`check_binlog_name`]) to stdout. Read-only.
    fn binlog_read_script(&self, base: &str, file: &str) -> Result<String>;

    /// Run on the machine of a restored, running instance, a binary log file on stdin: applies
    /// its events after the instance's own `@@gtid_binlog_pos` (so a file holding events the
    /// instance has is applied from where it stands) and before the first event stamped at or
    /// after `stop_utc` (`YYYY-MM-DD HH:MM:SS`, UTC), keeping their GTIDs; prints
    /// [`REPLAY_GTID`]`<pos>` (the instance's position after the file).
    fn binlog_replay_script(&self, base: &str, stop_utc: &str) -> Result<String>;

    /// Run on any machine with the server programs, a snapshot of [`Reseed::backup_script`]
    /// on stdin: extracts and prepares it in the new directory `scratch` (an absolute path of
    /// `[A-Za-z0-9._-]` segments that must not exist), starts a server on it with no network
    /// (a socket in `scratch` only), prints [`VERIFY_STARTED`], then one
    /// `<db>.<table>\t<checksum>` line per table (`CHECKSUM TABLE`; system schemas left out),
    /// stops the server and removes `scratch` whatever happened.
    fn verify_script(&self, scratch: &str, compression: Compression) -> Result<String>;
}

/// How a snapshot stream is compressed: a rebuild's stream between two machines is not (it
/// would cost CPU on both ends of a fast link); a stored backup is, with zstd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Zstd,
}

impl Compression {
    /// As a backup's manifest names it (`None` for an uncompressed file).
    pub fn name(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Zstd => Some("zstd"),
        }
    }

    /// From a manifest's name; an unknown one is refused, never guessed.
    pub fn from_name(name: Option<&str>) -> Result<Compression> {
        match name {
            None | Some("none") => Ok(Compression::None),
            Some("zstd") => Ok(Compression::Zstd),
            Some(other) => Err(Error::Invalid(format!(
                "{other:?} is not a known snapshot compression"
            ))),
        }
    }
}

/// Table files a compressibility sample reads from (one 4 MB chunk each).
pub const SAMPLE_FILES: usize = 8;

/// One file's sample as [`Reseed::compressibility_script`] printed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSample {
    pub file_bytes: u64,
    pub sample_bytes: u64,
    pub zstd_bytes: u64,
}

/// The `sample` lines of [`Reseed::compressibility_script`]'s output (others ignored).
pub fn parse_compressibility(stdout: &str) -> Vec<FileSample> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            if w.next()? != "sample" {
                return None;
            }
            let mut n = || w.next()?.parse::<u64>().ok();
            Some(FileSample {
                file_bytes: n()?,
                sample_bytes: n()?,
                zstd_bytes: n()?,
            })
        })
        .collect()
}

/// How much the sampled files would shrink as a whole (raw / compressed): each file's sample
/// ratio weighted by the file's size. `None` when nothing was sampled.
pub fn estimated_ratio(samples: &[FileSample]) -> Option<f64> {
    let (mut raw, mut z) = (0f64, 0f64);
    for s in samples.iter().filter(|s| s.sample_bytes > 0) {
        let size = s.file_bytes as f64;
        raw += size;
        z += size * s.zstd_bytes as f64 / s.sample_bytes as f64;
    }
    (raw > 0.0 && z > 0.0).then(|| raw / z)
}

/// zstd's level for stored snapshots: its fastest, so the compression keeps up with the
/// backup tool on a loaded primary's neighbour (a replica) and the stream still shrinks a lot.
const ZSTD_LEVEL: u8 = 1;

/// The line a verification prints once its scratch server answers.
pub const VERIFY_STARTED: &str = "kl-verify-started";

/// An absolute scratch path: `/`-separated segments of `[A-Za-z0-9._-]`, no `.`/`..`, at
/// least two segments, at most 512 bytes.
fn check_scratch(path: &str) -> Result<()> {
    let segs: Vec<&str> = path.strip_prefix('/').unwrap_or("").split('/').collect();
    let ok = path.starts_with('/')
        && path.len() <= 512
        && segs.len() >= 2
        && segs.iter().all(|s| {
            !s.is_empty()
                && *s != "."
                && *s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{path:?} is not a usable scratch directory"
        )))
    }
}

/// The line a replay prints: the instance's GTID position after the file.
pub const REPLAY_GTID: &str = "replay-gtid=";

/// A binary log file's name as `SHOW BINARY LOGS` gives it: 1..=128 bytes of
/// `[A-Za-z0-9._-]`, not starting with `.`.
pub fn check_binlog_name(file: &str) -> Result<()> {
    let ok = !file.is_empty()
        && file.len() <= 128
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{file:?} is not a binary log file name"
        )))
    }
}

/// A UTC time as `YYYY-MM-DD HH:MM:SS` (the only form the replay takes).
fn check_stop(stop: &str) -> Result<()> {
    let b = stop.as_bytes();
    let ok = b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{stop:?} is not a time as YYYY-MM-DD HH:MM:SS"
        )))
    }
}

/// Checks `tag` is digits (it becomes part of file names).
fn check_tag(tag: &str) -> Result<()> {
    if !tag.is_empty() && tag.len() <= 20 && tag.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("rebuild tag {tag:?} is not digits")))
    }
}

/// Shell snippet: exit [`MISSING_EXIT`] naming every missing program (none checked when empty).
pub(crate) fn programs_check(progs: &[String]) -> String {
    if progs.is_empty() {
        return String::new();
    }
    super::programs_check(progs)
}

/// A reseed script's output: exit 0 is `Ok`; a failed programs check is [`Error::Refused`]
/// naming the programs (`what` says what needs them); anything else is
/// [`Output::checked`]'s error.
pub fn checked(out: Output, what: &str) -> Result<Output> {
    if out.status == Some(MISSING_EXIT) {
        if let Some(line) = out
            .stderr_str()
            .lines()
            .find_map(|l| l.strip_prefix(MISSING_MARK).map(str::to_string))
        {
            return Err(Error::Refused {
                host: out.host.clone(),
                reason: format!(
                    "{what} needs{line} but the machine has no such program (install it, e.g. \
                     the mariadb-backup or zstd package)"
                ),
            });
        }
    }
    out.checked()
}

/// The GTID position a restore printed; only digits, `-` and `,` are accepted (it goes into a
/// quoted SQL literal).
pub fn parse_snapshot_gtid(stdout: &str) -> Result<String> {
    let pos = stdout
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(SNAPSHOT_GTID))
        .ok_or_else(|| Error::Invalid("the restore printed no GTID position".into()))?;
    if pos
        .chars()
        .all(|c| c.is_ascii_digit() || c == '-' || c == ',')
    {
        Ok(pos.to_string())
    } else {
        Err(Error::Invalid(format!("odd GTID position '{pos}'")))
    }
}

/// The files of a MariaDB instance a reseed replaces, in the order they are set aside: the
/// marker first, so an instance cut short in the middle is never taken as initialised.
fn moved(base: &str) -> [(String, bool); 3] {
    let b = base.trim_end_matches('/');
    [
        (format!("{b}/.initialised"), false),
        (format!("{b}/data"), true),
        (format!("{b}/log"), true),
    ]
}

impl super::MariaDbRecipe {
    fn checked_base(base: &str) -> Result<&str> {
        validate_base_dir(base)?;
        Ok(base.trim_end_matches('/'))
    }

    /// The snapshot programs, and zstd when the stream is compressed.
    fn programs_for(&self, compression: Compression) -> Vec<String> {
        let mut p = self.snapshot_programs();
        if compression == Compression::Zstd {
            p.push(self.zstd.clone());
        }
        p
    }

    /// Shell lines extracting the snapshot on stdin into `dir` (a shell word), decompressed
    /// first when `compression` says so; `status` (a shell word, a file path) carries zstd's
    /// exit status past the pipe, so a damaged stream fails here, not at the prepare.
    fn extract(&self, dir: &str, status: &str, compression: Compression) -> String {
        let mb = sh_quote(&self.mbstream);
        let fail = "{ echo 'mbstream could not extract the snapshot' >&2; exit 1; }";
        match compression {
            Compression::None => format!("{mb} -x -C {dir} || {fail}"),
            Compression::Zstd => format!(
                "{{ {z} -d -c -q; echo $? >{status}; }} | {mb} -x -C {dir}; mrc=$?
zrc=$(cat {status} 2>/dev/null); rm -f {status}
[ \"$zrc\" = 0 ] || {{ echo \"the snapshot did not decompress (zstd exit ${{zrc:-unknown}}): damaged or not zstd\" >&2; exit 1; }}
[ \"$mrc\" = 0 ] || {fail}",
                z = sh_quote(&self.zstd)
            ),
        }
    }
}

impl Reseed for super::MariaDbRecipe {
    fn snapshot_programs(&self) -> Vec<String> {
        vec![self.backup.clone(), self.mbstream.clone()]
    }

    fn stored_snapshot_programs(&self, compression: Compression) -> Vec<String> {
        self.programs_for(compression)
    }

    fn space_script(&self, base: &str, programs: &[String]) -> Result<String> {
        let b = Self::checked_base(base)?;
        Ok(format!(
            "{check}echo \"data_kb=$(du -sk {data} 2>/dev/null | awk '{{print $1}}')\"\n\
             echo \"free_kb=$(df -Pk {b} | awk 'NR==2 {{print $4}}')\"",
            check = programs_check(programs),
            data = sh_quote(&format!("{b}/data")),
            b = sh_quote(b),
        ))
    }

    fn compressibility_script(&self, base: &str) -> Result<String> {
        let b = Self::checked_base(base)?;
        // The largest table files, a 4 MB chunk from the middle of each (past the header
        // pages), read twice: counted raw, then compressed as a stored snapshot is.
        Ok(format!(
            "d={data}
find \"$d\" -type f \\( -name '*.ibd' -o -name 'ibdata*' \\) -size +1M -printf '%s %p\\n' 2>/dev/null \\
| sort -rn | head -n {n} | while read -r size f; do
  chunk() {{ dd if=\"$f\" bs=1048576 skip=$((size / 2097152)) count=4 2>/dev/null; }}
  echo \"sample $size $(chunk | wc -c) $(chunk | {z} -q -c -{ZSTD_LEVEL} | wc -c)\"
done",
            data = sh_quote(&super::mariadb::Paths::of_base(b).data),
            n = SAMPLE_FILES,
            z = sh_quote(&self.zstd),
        ))
    }

    fn set_aside_script(&self, base: &str, tag: &str) -> Result<String> {
        let b = Self::checked_base(base)?;
        check_tag(tag)?;
        let mut s = self.prelude();
        for (path, dir) in moved(b) {
            let aside = format!("{path}.rebuild-{tag}");
            // Moved once: a rerun finds it aside already and leaves it there.
            s.push_str(&format!(
                "if [ -e {p} ] && [ ! -e {a} ]; then mv {p} {a} || exit 1; fi\n",
                p = sh_quote(&path),
                a = sh_quote(&aside),
            ));
            if dir {
                s.push_str(&format!(
                    "mkdir -p {p} && chown \"$RU\" {p} || exit 1\n",
                    p = sh_quote(&path)
                ));
            }
        }
        Ok(s)
    }

    fn put_back_script(&self, base: &str, tag: &str) -> Result<String> {
        let b = Self::checked_base(base)?;
        check_tag(tag)?;
        let mut s = String::new();
        // Reverse order: the marker comes back last, once its data is in place.
        for (path, _) in moved(b).into_iter().rev() {
            let aside = format!("{path}.rebuild-{tag}");
            s.push_str(&format!(
                "if [ -e {a} ]; then rm -rf {p} && mv {a} {p} || exit 1; fi\n",
                p = sh_quote(&path),
                a = sh_quote(&aside),
            ));
        }
        Ok(s)
    }

    fn drop_aside_script(&self, base: &str) -> Result<String> {
        let b = Self::checked_base(base)?;
        // The glob is confined to the validated instance dir and the fixed names.
        Ok(format!(
            "cd {b} || exit 1\nrm -rf ./.initialised.rebuild-* ./data.rebuild-* ./log.rebuild-*",
            b = sh_quote(b)
        ))
    }

    fn backup_script(&self, base: &str, compression: Compression) -> Result<String> {
        let b = Self::checked_base(base)?;
        let p = super::mariadb::Paths::of_base(b);
        let mut programs = vec![self.backup.clone()];
        // stdout carries the stream only; the tool's log goes to a file read on failure. With
        // compression the tool's status goes through a file (POSIX sh has no pipefail).
        let (open, close) = match compression {
            Compression::None => (String::new(), "\nrc=$?".to_string()),
            Compression::Zstd => {
                programs.push(self.zstd.clone());
                (
                    "{ ".to_string(),
                    format!(
                        "; echo $? >\"$t/rc\"; }} | {z} -q -c -T0 -{ZSTD_LEVEL}
zrc=$?; rc=$(cat \"$t/rc\" 2>/dev/null); [ -n \"$rc\" ] || rc=1
if [ $zrc -ne 0 ]; then echo \"zstd failed (exit $zrc)\" >&2; exit 1; fi",
                        z = sh_quote(&self.zstd)
                    ),
                )
            }
        };
        Ok(format!(
            "{pre}{check}t=$(mktemp -d {tmp}/rebuild-XXXXXX) || exit 1
trap 'rm -rf \"$t\"' EXIT
chmod 0700 \"$t\"
{open}{bk} --defaults-file={cnf} --backup --stream=xbstream --user=root --socket={sock} \
--target-dir=\"$t\" 2>\"$t/backup.log\"{close}
if [ $rc -ne 0 ] || ! tail -n 3 \"$t/backup.log\" | grep -q 'completed OK!'; then
  echo \"mariadb-backup failed (exit $rc):\" >&2; tail -n 20 \"$t/backup.log\" >&2; exit 1
fi
sed -n \"s/.*GTID of the last change '\\([0-9,-]*\\)'.*/{mark}\\1/p\" \"$t/backup.log\" | tail -n 1 >&2",
            mark = SNAPSHOT_GTID,
            pre = self.prelude(),
            check = programs_check(&programs),
            tmp = sh_quote(&format!("{b}/tmp")),
            bk = sh_quote(&self.backup),
            cnf = sh_quote(&p.cnf),
            sock = sh_quote(&p.sock),
        ))
    }

    fn restore_script(&self, base: &str, compression: Compression) -> Result<String> {
        let b = Self::checked_base(base)?;
        let p = super::mariadb::Paths::of_base(b);
        let log = format!("{b}/tmp/rebuild-prepare.log");
        let status = sh_quote(&format!("{b}/tmp/rebuild-unzstd.rc"));
        Ok(format!(
            "{pre}{check}d={data}
[ -d \"$d\" ] && [ -z \"$(ls -A \"$d\")\" ] || {{ echo \"the data dir $d is missing or not empty\" >&2; exit 1; }}
{extract}
{bk} --defaults-file={cnf} --prepare --target-dir=\"$d\" >{log} 2>&1
rc=$?
if [ $rc -ne 0 ] || ! tail -n 3 {log} | grep -q 'completed OK!'; then
  echo \"mariadb-backup --prepare failed (exit $rc):\" >&2; tail -n 20 {log} >&2; exit 1
fi
rm -f {log} \"$d/master.info\" \"$d/relay-log.info\" \"$d/multi-master.info\"
pos=$(awk 'NR==1 {{print $3}}' \"$d/xtrabackup_binlog_info\" 2>/dev/null)
chown -R \"$RU\" \"$d\" {logdir} || exit 1
touch {marker} || exit 1
echo \"{mark}$pos\"",
            pre = self.prelude(),
            check = programs_check(&self.programs_for(compression)),
            data = sh_quote(&p.data),
            extract = self.extract("\"$d\"", &status, compression),
            bk = sh_quote(&self.backup),
            cnf = sh_quote(&p.cnf),
            log = sh_quote(&log),
            logdir = sh_quote(&p.log),
            marker = sh_quote(&p.marker),
            mark = SNAPSHOT_GTID,
        ))
    }

    fn verify_script(&self, scratch: &str, compression: Compression) -> Result<String> {
        check_scratch(scratch)?;
        let mut progs = self.programs_for(compression);
        progs.extend([self.mariadbd.clone(), self.client.clone()]);
        // The server runs as the instances' OS user (as root) with no network and no grant
        // checks: only its socket, in the 0700 scratch directory, reaches it.
        Ok(format!(
            r#"{pre}{check}umask 077
s={s}; pid=
if [ -e "$s" ]; then echo "the scratch directory $s exists" >&2; exit 1; fi
finish() {{ if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi; rm -rf "$s"; }}
trap finish EXIT
trap 'exit 1' HUP INT TERM PIPE
mkdir -p "$s/data" "$s/run" "$s/tmp" || exit 1
{extract}
{bk} --prepare --target-dir="$s/data" >"$s/prepare.log" 2>&1
rc=$?
if [ $rc -ne 0 ] || ! tail -n 3 "$s/prepare.log" | grep -q 'completed OK!'; then
  echo "mariadb-backup --prepare failed (exit $rc):" >&2; tail -n 20 "$s/prepare.log" >&2; exit 1
fi
chown -R "$RU" "$s" || exit 1
{d} --no-defaults --user="$RU" --datadir="$s/data" --tmpdir="$s/tmp" --socket="$s/run/sock"   --pid-file="$s/run/pid" --log-error="$s/error.log" --skip-networking --skip-grant-tables   --skip-slave-start --log-bin="$s/run/binlog" --server-id=1 --innodb-buffer-pool-size=64M &
pid=$!
q() {{ {cl} --no-defaults --socket="$s/run/sock" --user=root -N -B -e "$1"; }}
i=0
until q 'SELECT 1' >/dev/null 2>&1; do
  i=$((i+1))
  if ! kill -0 "$pid" 2>/dev/null || [ $i -gt 900 ]; then
    echo 'the server did not start on the snapshot:' >&2; tail -n 20 "$s/error.log" >&2; exit 1
  fi
  sleep 0.2
done
echo {started}
q "SELECT CONCAT('\`', REPLACE(table_schema, '\`', '\`\`'), '\`.\`', REPLACE(table_name, '\`', '\`\`'), '\`') FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN {system} ORDER BY 1" >"$s/tables" || exit 1
while IFS= read -r t; do q "CHECKSUM TABLE $t" || exit 1; done <"$s/tables"
q 'SHUTDOWN' >/dev/null 2>&1
wait "$pid" 2>/dev/null; pid="#,
            pre = self.prelude(),
            check = programs_check(&progs),
            s = sh_quote(scratch),
            system = super::mariadb::SYSTEM_SCHEMAS_SQL,
            extract = self.extract("\"$s/data\"", "\"$s/unzstd.rc\"", compression),
            bk = sh_quote(&self.backup),
            d = sh_quote(&self.mariadbd),
            cl = sh_quote(&self.client),
            started = VERIFY_STARTED,
        ))
    }

    fn binlog_read_script(&self, base: &str, file: &str) -> Result<String> {
        let b = Self::checked_base(base)?;
        check_binlog_name(file)?;
        let p = super::mariadb::Paths::of_base(b);
        Ok(format!(
            "exec cat -- {f}",
            f = sh_quote(&format!("{}/{file}", p.log))
        ))
    }

    fn binlog_replay_script(&self, base: &str, stop_utc: &str) -> Result<String> {
        let b = Self::checked_base(base)?;
        check_stop(stop_utc)?;
        let p = super::mariadb::Paths::of_base(b);
        // POSIX sh has no pipefail: the reader's status goes through a file. The client runs
        // as root over the instance's socket (like the snapshot tools); `--binary-mode` keeps
        // row events' bytes as they are.
        Ok(format!(
            "{check}t=$(mktemp -d {tmp}/replay-XXXXXX) || exit 1
trap 'rm -rf \"$t\"' EXIT
q() {{ {cl} --no-defaults --user=root --socket={sock} -N -B -e \"$1\"; }}
pos=$(q 'SELECT @@gtid_binlog_pos') || {{ echo 'cannot read the instance position' >&2; exit 1; }}
{{ TZ=UTC {bl} --start-position=\"$pos\" --stop-datetime={stop} - 2>\"$t/read.log\"; echo $? >\"$t/rc\"; }} \
  | {cl} --no-defaults --user=root --socket={sock} --binary-mode 2>\"$t/apply.log\"
rc=$?
if [ \"$(cat \"$t/rc\")\" != 0 ]; then echo 'mariadb-binlog failed:' >&2; tail -n 20 \"$t/read.log\" >&2; exit 1; fi
if [ $rc -ne 0 ]; then echo \"applying the events failed (exit $rc):\" >&2; tail -n 20 \"$t/apply.log\" >&2; exit 1; fi
echo \"{mark}$(q 'SELECT @@gtid_binlog_pos')\"",
            check = programs_check(&[self.binlog.clone(), self.client.clone()]),
            tmp = sh_quote(&format!("{b}/tmp")),
            cl = sh_quote(&self.client),
            bl = sh_quote(&self.binlog),
            sock = sh_quote(&p.sock),
            stop = sh_quote(stop_utc),
            mark = REPLAY_GTID,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::MariaDbRecipe;

    const BASE: &str = "/data/kunlun/storage_57001";

    fn sh(script: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .args(["-c", script])
            .output()
            .expect("sh")
    }

    #[test]
    fn paths_outside_an_instance_dir_and_odd_tags_are_refused() {
        let r = MariaDbRecipe::default();
        assert!(r.set_aside_script("/data", "7").is_err());
        assert!(r.drop_aside_script("/data/kunlun/../etc").is_err());
        assert!(r.set_aside_script(BASE, "7; rm -rf /").is_err());
        assert!(r.put_back_script(BASE, "").is_err());
        assert!(r.set_aside_script(BASE, "42").is_ok());
    }

    #[test]
    fn set_aside_and_put_back_round_trip_and_a_rerun_changes_nothing() {
        let r = MariaDbRecipe {
            // The test runs as whoever runs it: no chown to another user.
            os_user: whoami(),
            ..MariaDbRecipe::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let base = format!("{}/kunlun/storage_4242", dir.path().display());
        for d in ["data", "log"] {
            std::fs::create_dir_all(format!("{base}/{d}")).unwrap();
        }
        std::fs::write(format!("{base}/data/ibdata1"), "old").unwrap();
        std::fs::write(format!("{base}/log/binlog.000001"), "errant").unwrap();
        std::fs::write(format!("{base}/.initialised"), "").unwrap();

        let aside = r.set_aside_script(&base, "9").unwrap();
        for _ in 0..2 {
            assert!(sh(&aside).status.success());
        }
        assert!(std::fs::read_dir(format!("{base}/data"))
            .unwrap()
            .next()
            .is_none());
        assert!(std::fs::read_dir(format!("{base}/log"))
            .unwrap()
            .next()
            .is_none());
        assert!(!std::path::Path::new(&format!("{base}/.initialised")).exists());
        assert_eq!(
            std::fs::read_to_string(format!("{base}/data.rebuild-9/ibdata1")).unwrap(),
            "old"
        );
        // A partial copy in the new dirs is replaced by the old data.
        std::fs::write(format!("{base}/data/partial"), "x").unwrap();
        let back = r.put_back_script(&base, "9").unwrap();
        for _ in 0..2 {
            assert!(sh(&back).status.success());
        }
        assert_eq!(
            std::fs::read_to_string(format!("{base}/data/ibdata1")).unwrap(),
            "old"
        );
        assert!(!std::path::Path::new(&format!("{base}/data/partial")).exists());
        assert!(std::path::Path::new(&format!("{base}/.initialised")).exists());
        assert!(std::path::Path::new(&format!("{base}/log/binlog.000001")).exists());

        // Aside again, then dropped: only the instance's own dirs remain.
        assert!(sh(&aside).status.success());
        assert!(sh(&r.drop_aside_script(&base).unwrap()).status.success());
        let mut left: Vec<String> = std::fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["data", "log"]);
    }

    #[test]
    fn the_backup_streams_only_the_snapshot_and_the_restore_prints_its_position() {
        let r = MariaDbRecipe::default();
        let b = r.backup_script(BASE, Compression::None).unwrap();
        assert!(b.contains(
            "--defaults-file='/data/kunlun/storage_57001/my.cnf' --backup --stream=xbstream"
        ));
        assert!(
            b.contains("2>\"$t/backup.log\""),
            "its log stays off stdout: {b}"
        );
        assert!(b.contains("completed OK!"));
        assert!(b.contains("GTID of the last change"), "{b}");
        let s = r.restore_script(BASE, Compression::None).unwrap();
        assert!(s.contains("'/usr/bin/mbstream' -x -C \"$d\""), "{s}");
        assert!(s.contains("--prepare --target-dir=\"$d\""));
        assert!(s.contains("xtrabackup_binlog_info"));
        assert!(
            s.contains("-z \"$(ls -A \"$d\")\""),
            "an empty data dir only"
        );
        assert!(s.ends_with(&format!("echo \"{SNAPSHOT_GTID}$pos\"")));
        assert!(!s.contains("password") && !b.contains("password"));
    }

    #[test]
    fn a_compressed_stream_is_decompressed_into_the_extract_and_damage_fails_it() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in for mbstream: `-x -C <dir>` keeps its stdin as <dir>/out.
        let fake = dir.path().join("mbstream");
        std::fs::write(&fake, "#!/bin/sh\ncat > \"$3/out\"\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let r = MariaDbRecipe {
            mbstream: fake.display().to_string(),
            ..MariaDbRecipe::default()
        };
        let out_dir = dir.path().join("x");
        std::fs::create_dir(&out_dir).unwrap();
        let status = format!("'{}/rc'", dir.path().display());
        let extract = r.extract(
            &format!("'{}'", out_dir.display()),
            &status,
            Compression::Zstd,
        );
        let payload = dir.path().join("payload");
        std::fs::write(&payload, b"snapshot bytes\n".repeat(1000)).unwrap();
        let good = sh(&format!(
            "zstd -q -c '{p}' | {{\n{extract}\n}}",
            p = payload.display()
        ));
        assert!(good.status.success(), "{good:?}");
        assert_eq!(
            std::fs::read(out_dir.join("out")).unwrap(),
            std::fs::read(&payload).unwrap()
        );
        assert!(
            !dir.path().join("rc").exists(),
            "the status file is removed"
        );
        let bad = sh(&format!(
            "cat '{p}' | {{\n{extract}\n}}",
            p = payload.display()
        ));
        assert!(!bad.status.success());
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("did not decompress"),
            "{bad:?}"
        );
        let b = r.backup_script(BASE, Compression::Zstd).unwrap();
        assert!(b.contains("| '/usr/bin/zstd' -q -c -T0 -1"), "{b}");
        // The compressor is checked with the snapshot's programs before a backup starts.
        assert!(r
            .stored_snapshot_programs(Compression::Zstd)
            .contains(&"/usr/bin/zstd".to_string()));
        assert!(!r
            .stored_snapshot_programs(Compression::None)
            .iter()
            .any(|p| p.contains("zstd")));
        assert!(b.contains("rc=$(cat \"$t/rc\""), "{b}");
        assert_eq!(
            Compression::from_name(Some("zstd")).unwrap(),
            Compression::Zstd
        );
        assert_eq!(Compression::from_name(None).unwrap(), Compression::None);
        assert!(Compression::from_name(Some("lz5")).is_err());
    }

    #[test]
    fn the_space_script_reports_data_and_free_space() {
        let r = MariaDbRecipe::default();
        let dir = tempfile::tempdir().unwrap();
        let base = format!("{}/kunlun/storage_4242", dir.path().display());
        std::fs::create_dir_all(format!("{base}/data")).unwrap();
        std::fs::write(format!("{base}/data/x"), vec![1u8; 64 * 1024]).unwrap();
        let out = sh(&r.space_script(&base, &[]).unwrap());
        let text = String::from_utf8_lossy(&out.stdout);
        let kb = |k: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{k} in {text}"))
        };
        assert!(kb("data_kb=") >= 64, "{text}");
        assert!(kb("free_kb=") > 0, "{text}");
        let missing = sh(&r
            .space_script(&base, &["/nonexistent/kunlun-test/mbstream".into()])
            .unwrap());
        assert_eq!(missing.status.code(), Some(MISSING_EXIT));
    }

    #[test]
    fn the_compressibility_sample_tells_random_from_repeated_table_data() {
        let r = MariaDbRecipe::default();
        let dir = tempfile::tempdir().unwrap();
        let base = format!("{}/kunlun/storage_4243", dir.path().display());
        let sample = |files: &[(&str, Vec<u8>)]| {
            let _ = std::fs::remove_dir_all(format!("{base}/data"));
            for (name, bytes) in files {
                let path = format!("{base}/data/{name}");
                std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            let out = sh(&r.compressibility_script(&base).unwrap());
            assert!(out.status.success(), "{out:?}");
            parse_compressibility(&String::from_utf8_lossy(&out.stdout))
        };
        // Pseudo-random bytes (xorshift): no compressor shrinks them.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let random: Vec<u8> = (0..12 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let repeated: Vec<u8> = b"kunlun row "
            .iter()
            .copied()
            .cycle()
            .take(12 << 20)
            .collect();
        // A large random table beside a small, empty system tablespace: the table weighs.
        let got = sample(&[
            ("db/t.ibd", random),
            ("ibdata1", vec![0u8; 2 << 20]),
            ("db/small.ibd", vec![0u8; 512]),
        ]);
        assert_eq!(got.len(), 2, "the files over 1 MB: {got:?}");
        assert_eq!(got[0].file_bytes, 12 << 20, "largest first: {got:?}");
        assert_eq!(got[0].sample_bytes, 4 << 20, "{got:?}");
        let r = estimated_ratio(&got).unwrap();
        assert!(r < 1.2, "mostly random: {r} {got:?}");
        let got = sample(&[("db/a.ibd", repeated.clone()), ("db/b.ibd", repeated)]);
        let r = estimated_ratio(&got).unwrap();
        assert!(r > 20.0, "repeated: {r} {got:?}");
        // No table file: nothing sampled, nothing estimated.
        assert!(sample(&[]).is_empty());
        assert_eq!(estimated_ratio(&[]), None);
        assert!(parse_compressibility("sample 1 x 2\nother 1 2 3").is_empty());
    }

    #[test]
    fn the_snapshot_position_is_parsed_and_checked() {
        assert_eq!(
            parse_snapshot_gtid("x\nsnapshot-gtid=0-1-5\n").unwrap(),
            "0-1-5"
        );
        assert_eq!(parse_snapshot_gtid("snapshot-gtid=").unwrap(), "");
        assert!(parse_snapshot_gtid("nothing").is_err());
        assert!(parse_snapshot_gtid("snapshot-gtid=0-1-5'; DROP").is_err());
    }

    #[test]
    fn a_failed_programs_check_is_a_refusal_naming_the_program() {
        let out = Output {
            host: "h:22".into(),
            command: "c".into(),
            status: Some(MISSING_EXIT),
            signal: None,
            stdout: vec![],
            stderr: format!("{MISSING_MARK} /usr/bin/mariadb-backup\n").into_bytes(),
        };
        let e = checked(out, "the snapshot").unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
        assert!(e.to_string().contains("/usr/bin/mariadb-backup"), "{e}");
    }

    #[test]
    fn the_backup_prints_the_snapshots_gtid_from_the_tools_log() {
        let b = MariaDbRecipe::default()
            .backup_script(BASE, Compression::None)
            .unwrap();
        let line = b
            .lines()
            .find(|l| l.contains("GTID of the last change"))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("backup.log"),
            "[00] 2026-12-06 mariabackup: MySQL binlog position: filename 'binlog.000002', \
             position '1234', GTID of the last change '0-1-7,1-2-3'\n[00] completed OK!\n",
        )
        .unwrap();
        let out = sh(&format!("t={}\n{line}", dir.path().display()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            parse_snapshot_gtid(&stderr).unwrap(),
            "0-1-7,1-2-3",
            "{stderr}"
        );
    }

    fn whoami() -> String {
        let out = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
