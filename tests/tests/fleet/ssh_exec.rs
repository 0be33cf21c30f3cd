//! The SSH executor against a real private sshd: exit codes and stderr, large output, file
//! transfer, deadlines, authentication and host key failures, a server dying mid-command, and
//! many concurrent commands over the pool.

use std::time::Duration;

use kunlun_provision::{Error, HostKeyPolicy, SshExecutor, SshOptions, SshTarget};
use kunlun_tests::{generate_key_pair, Sshd};

const T: Duration = Duration::from_secs(30);

fn target(sshd: &Sshd) -> SshTarget {
    SshTarget::new(
        sshd.host(),
        sshd.port(),
        sshd.user(),
        &sshd.user_key().private,
        sshd.known_hosts(),
    )
}

fn sshd() -> Sshd {
    Sshd::start().expect("start a private sshd")
}

#[tokio::test]
async fn exit_codes_stdout_and_stderr_are_data() {
    let s = sshd();
    let ex = SshExecutor::default();
    let t = target(&s);
    let out = ex
        .exec(&t, "echo out; echo err >&2; exit 3", T)
        .await
        .expect("command ran");
    assert_eq!(out.status, Some(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(
        out.stderr, b"err\n",
        "the pgid marker line is not in stderr"
    );
    let err = out
        .checked()
        .expect_err("non-zero exit is an error when checked");
    match &err {
        Error::RemoteFailed {
            command,
            status,
            stderr_tail,
            ..
        } => {
            assert_eq!(command, "echo out; echo err >&2; exit 3");
            assert_eq!(status, "exit 3");
            assert_eq!(stderr_tail, "err");
        }
        other => panic!("expected RemoteFailed, got {other:?}"),
    }
    let ok = ex.exec(&t, "true", T).await.expect("ran").checked();
    assert!(ok.is_ok());
    let killed = ex.exec(&t, "kill -TERM $$", T).await.expect("ran");
    assert_eq!(killed.status, None);
    assert_eq!(killed.signal.as_deref(), Some("TERM"));
}

#[tokio::test]
async fn ten_megabytes_of_output_with_stderr_filling_its_window_first() {
    let s = sshd();
    let ex = SshExecutor::default();
    // 3 MiB of stderr before any stdout: more than a channel window, so reading only stdout
    // would stall.
    let cmd = "head -c 3145728 /dev/zero | tr '\\0' e >&2; head -c 10485760 /dev/zero | tr '\\0' x";
    let out = ex.exec(&target(&s), cmd, T).await.expect("command ran");
    assert!(out.success());
    assert_eq!(out.stdout.len(), 10 * 1024 * 1024);
    assert!(out.stdout.iter().all(|&b| b == b'x'));
    assert_eq!(out.stderr.len(), 3 * 1024 * 1024);
    assert!(out.stderr.iter().all(|&b| b == b'e'));
}

#[tokio::test]
async fn upload_bytes_and_file_then_read_back() {
    let s = sshd();
    let ex = SshExecutor::default();
    let t = target(&s);
    let remote = s.dir().join("uploaded.cnf").display().to_string();
    ex.upload(&t, b"[mysqld]\nport=3306\n".to_vec(), &remote, 0o640, T)
        .await
        .expect("upload bytes");
    let back = ex.read_file(&t, &remote, T).await.expect("read back");
    assert_eq!(back, b"[mysqld]\nport=3306\n");
    let mode = ex
        .exec(&t, &format!("stat -c %a {remote}"), T)
        .await
        .expect("stat");
    assert_eq!(mode.stdout_str().trim(), "640");

    let local = tempfile::NamedTempFile::new().expect("temp file");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(local.path(), &data).expect("write local");
    let remote_bin = s.dir().join("tool.bin").display().to_string();
    ex.upload_file(&t, local.path(), &remote_bin, 0o755, T)
        .await
        .expect("upload file");
    assert_eq!(ex.read_file(&t, &remote_bin, T).await.expect("read"), data);
    let mode = ex
        .exec(&t, &format!("stat -c %a {remote_bin}"), T)
        .await
        .expect("stat");
    assert_eq!(mode.stdout_str().trim(), "755");

    let missing = ex
        .read_file(&t, &s.dir().join("nope").display().to_string(), T)
        .await;
    assert!(
        matches!(missing, Err(Error::RemoteFile { .. })),
        "{missing:?}"
    );
    // A file error leaves the pooled connection usable.
    assert!(ex.exec(&t, "true", T).await.expect("ran").success());
}

#[tokio::test]
async fn command_past_its_deadline_is_killed_and_times_out() {
    let s = sshd();
    let ex = SshExecutor::default();
    let t = target(&s);
    let res = ex
        .exec(&t, "sleep 30.5117; echo finished", Duration::from_secs(1))
        .await;
    assert!(matches!(res, Err(Error::Timeout { .. })), "{res:?}");
    // The remote sleep was killed: wait (bounded) for it to disappear from the process table.
    let mut gone = false;
    for _ in 0..100 {
        let check = ex
            .exec(&t, "pgrep -f 'sleep 30[.]5117'", T)
            .await
            .expect("pgrep ran");
        if check.status == Some(1) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the timed-out remote command is no longer running");
}

#[tokio::test]
async fn wrong_key_is_auth_failed() {
    let s = sshd();
    let dir = tempfile::tempdir().expect("temp dir");
    let other = generate_key_pair(dir.path(), "other").expect("key pair");
    let mut t = target(&s);
    t.auth.private_key = Some(other.private.clone());
    let res = SshExecutor::default().exec(&t, "true", T).await;
    assert!(matches!(res, Err(Error::AuthFailed { .. })), "{res:?}");
}

#[tokio::test]
async fn changed_host_key_is_a_mismatch() {
    let s = sshd();
    let t = target(&s);
    assert!(SshExecutor::default()
        .exec(&t, "true", T)
        .await
        .expect("known key")
        .success());
    s.change_host_key().expect("new host key");
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let mut t = t.clone();
        t.host_key_policy = policy;
        let res = SshExecutor::default().exec(&t, "true", T).await;
        match res {
            Err(e @ Error::HostKeyMismatch { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&s.known_hosts().display().to_string()),
                    "{msg}"
                );
                assert!(msg.contains("SHA256:"), "{msg}");
            }
            other => panic!("{policy:?}: expected HostKeyMismatch, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn unknown_host_strict_fails_and_accept_new_records_the_key() {
    let s = sshd();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut t = target(&s);
    t.known_hosts = dir.path().join("known_hosts");
    let res = SshExecutor::default().exec(&t, "true", T).await;
    assert!(matches!(res, Err(Error::HostKeyUnknown { .. })), "{res:?}");

    t.host_key_policy = HostKeyPolicy::AcceptNew;
    assert!(SshExecutor::default()
        .exec(&t, "true", T)
        .await
        .expect("accept-new")
        .success());
    let recorded = std::fs::read_to_string(&t.known_hosts).expect("known_hosts written");
    let expected = format!(
        "[{}]:{} {}",
        s.host(),
        s.port(),
        s.host_key().public_key().expect("host key")
    );
    assert_eq!(recorded.trim(), expected);

    t.host_key_policy = HostKeyPolicy::Strict;
    assert!(SshExecutor::default()
        .exec(&t, "true", T)
        .await
        .expect("recorded key is trusted")
        .success());
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let s = sshd();
    let mut t = target(&s);
    s.stop().expect("stop sshd");
    t.port = s.port();
    let res = SshExecutor::default().exec(&t, "true", T).await;
    assert!(matches!(res, Err(Error::Unreachable { .. })), "{res:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_stopped_mid_command_is_an_error_not_a_hang() {
    let s = sshd();
    let ex = SshExecutor::default();
    let t = target(&s);
    let running = {
        let (ex, t) = (ex.clone(), t.clone());
        tokio::spawn(async move { ex.exec(&t, "sleep 60.2231", Duration::from_secs(300)).await })
    };
    // Wait until the command runs on the server, then kill the server and its sessions.
    let mut started = false;
    for _ in 0..200 {
        let out = s
            .ssh_command("pgrep -f 'sleep 60[.]2231'")
            .output()
            .expect("ssh");
        if out.status.success() {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "the command started");
    s.stop().expect("stop sshd");
    // The guard only turns a hang into a failure; the call must end long before it.
    let res = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the call ended instead of hanging")
        .expect("task");
    assert!(matches!(res, Err(Error::Disconnected { .. })), "{res:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_commands_share_the_pool() {
    let s = sshd();
    let max = 8;
    let ex = SshExecutor::new(SshOptions {
        max_connections_per_host: max,
        ..SshOptions::default()
    });
    let t = target(&s);
    for round in 0..2 {
        let runs = (0..50).map(|i| {
            let (ex, t) = (ex.clone(), t.clone());
            async move {
                let out = ex
                    .exec(&t, &format!("echo {round}-{i}"), T)
                    .await
                    .expect("command ran")
                    .checked()
                    .expect("exit 0");
                assert_eq!(out.stdout_str(), format!("{round}-{i}\n"));
            }
        });
        futures::future::join_all(runs).await;
    }
    let opened = ex.connections_opened();
    assert!(
        (1..=max as u64).contains(&opened),
        "100 commands used at most {max} connections, opened {opened}"
    );
    assert_eq!(
        ex.idle_connections(&t) as u64,
        opened,
        "all went back to the pool"
    );
}

#[tokio::test]
async fn paused_sshd_is_a_timeout() {
    let s = sshd();
    let t = target(&s);
    s.pause().expect("SIGSTOP sshd");
    // The TCP connect succeeds (kernel backlog) but the handshake gets no answer.
    let res = SshExecutor::default()
        .exec(&t, "true", Duration::from_secs(2))
        .await;
    s.resume().expect("SIGCONT sshd");
    assert!(matches!(res, Err(Error::Timeout { .. })), "{res:?}");
}

#[tokio::test]
async fn pooled_connection_to_a_restarted_sshd_is_replaced() {
    let s = sshd();
    let ex = SshExecutor::default();
    let t = target(&s);
    assert!(ex.exec(&t, "true", T).await.expect("first").success());
    assert_eq!(ex.idle_connections(&t), 1);
    s.restart().expect("restart sshd (drops every session)");
    let out = ex
        .exec(&t, "echo again", T)
        .await
        .expect("a dead idle connection is replaced, not reported");
    assert_eq!(out.stdout_str(), "again\n");
    assert_eq!(ex.connections_opened(), 2);
}

#[tokio::test]
async fn host_with_several_key_types_is_checked_against_the_recorded_type() {
    // Real machines offer several host keys; known_hosts often records just one type.
    let keys = tempfile::tempdir().expect("temp dir");
    let ecdsa = keys.path().join("ssh_host_ecdsa_key");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ecdsa", "-N", "", "-f"])
        .arg(&ecdsa)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    let line = format!("HostKey {}", ecdsa.display());
    let s = Sshd::start_with(std::net::Ipv4Addr::LOCALHOST, &[&line]).expect("sshd");
    // known_hosts holds only the ed25519 key.
    let out = SshExecutor::default()
        .exec(&target(&s), "echo ok", T)
        .await
        .expect("the recorded ed25519 key is negotiated and matches");
    assert_eq!(out.stdout_str(), "ok\n");

    // And when only the ecdsa key is recorded, that type is negotiated instead.
    let pubkey = std::fs::read_to_string(ecdsa.with_extension("pub")).expect("ecdsa pub");
    let pubkey: Vec<&str> = pubkey.split_whitespace().take(2).collect();
    let mut t = target(&s);
    t.known_hosts = keys.path().join("known_hosts");
    std::fs::write(
        &t.known_hosts,
        format!("[{}]:{} {}\n", s.host(), s.port(), pubkey.join(" ")),
    )
    .expect("write known_hosts");
    let out = SshExecutor::default()
        .exec(&t, "echo ok", T)
        .await
        .expect("the recorded ecdsa key is negotiated and matches");
    assert_eq!(out.stdout_str(), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_reaches_the_command_and_event_lines_arrive_live() {
    use kunlun_provision::ExecInput;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    let s = sshd();
    let ex = SshExecutor::default();
    let t = target(&s);
    // 4 MiB of input: more than a channel window, so it is written as the command reads.
    let input: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let out = ex
        .exec_with(
            &t,
            "sha256sum | cut -d' ' -f1",
            ExecInput {
                stdin: Some(input.clone()),
                on_event: None,
            },
            T,
        )
        .await
        .expect("command ran");
    assert!(out.success(), "{}", out.stderr_str());
    let want = {
        use std::io::Write;
        let mut c = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("local sha256sum");
        c.stdin.take().unwrap().write_all(&input).unwrap();
        let o = c.wait_with_output().unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        out.stdout_str().trim(),
        want,
        "every input byte arrived, then EOF"
    );

    // Events are handed over as they come (the second one a second after the first), in
    // order, and are not in the output; other stderr lines stay.
    let seen: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let cb = {
        let seen = seen.clone();
        Arc::new(move |e: &str| seen.lock().unwrap().push((e.to_string(), Instant::now())))
    };
    let secret = "pa$$ 'w\"ord";
    let out = ex
        .exec_with(
            &t,
            "S=$(cat); echo kunlun-event:one >&2; echo warn >&2; sleep 1; \
             echo kunlun-event:two >&2; printf '%s' \"$S\"",
            ExecInput {
                stdin: Some(secret.as_bytes().to_vec()),
                on_event: Some(cb),
            },
            T,
        )
        .await
        .expect("command ran");
    let end = Instant::now();
    assert!(out.success());
    assert_eq!(out.stdout_str(), secret, "stdin kept byte for byte");
    assert_eq!(out.stderr_str(), "warn\n");
    let seen = seen.lock().unwrap().clone();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["one", "two"]);
    assert!(
        end - seen[0].1 >= Duration::from_millis(900),
        "the first event came while the command still ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_carries_every_byte_from_one_command_to_another() {
    let (a, b) = (sshd(), sshd());
    let ex = SshExecutor::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("copy");
    // 20 MiB of varied bytes: more than the relay's queue and many channel windows.
    let gen = "i=0; while [ $i -lt 40 ]; do head -c 524288 /dev/zero | tr '\\0' $((i % 10)); i=$((i+1)); done";
    let sink = format!(
        "cat > {}; sha256sum < {} | cut -c1-64",
        out.display(),
        out.display()
    );
    let piped = ex
        .pipe(&target(&a), gen, &target(&b), &sink, None, T)
        .await
        .expect("both ends succeed");
    assert_eq!(piped.bytes, 40 * 524288);
    assert!(
        piped.source.stdout.is_empty(),
        "the stream went to the sink"
    );
    let local = ex
        .exec(&target(&a), &format!("{gen} | sha256sum | cut -c1-64"), T)
        .await
        .expect("ran");
    assert_eq!(
        piped.sink.stdout_str(),
        local.stdout_str(),
        "the same bytes arrived"
    );
    assert_eq!(std::fs::metadata(&out).expect("copy").len(), 40 * 524288);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_gets_the_sink_killed_and_never_ends_its_input() {
    let (a, b) = (sshd(), sshd());
    let ex = SshExecutor::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("sink-saw-eof");
    // The sink would record a clean end of input; the source fails after some output.
    let sink = format!("cat >/dev/null && touch {}", marker.display());
    let e = ex
        .pipe(
            &target(&a),
            "head -c 3000000 /dev/zero; echo broken >&2; exit 4",
            &target(&b),
            &sink,
            None,
            T,
        )
        .await
        .expect_err("a failed source fails the pipe");
    match &e {
        Error::RemoteFailed {
            status,
            stderr_tail,
            ..
        } => {
            assert_eq!(status, "exit 4");
            assert_eq!(stderr_tail, "broken");
        }
        other => panic!("the source's failure first, got {other:?}"),
    }
    assert!(!marker.exists(), "the sink never saw its input end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_ends_first_gets_the_source_killed() {
    let (a, b) = (sshd(), sshd());
    let ex = SshExecutor::default();
    // An endless source; the sink reads a little and quits with an error.
    let e = ex
        .pipe(
            &target(&a),
            "while :; do head -c 65536 /dev/zero; done",
            &target(&b),
            "head -c 100 >/dev/null; exit 5",
            None,
            T,
        )
        .await
        .expect_err("the pipe fails");
    let text = e.to_string();
    assert!(
        text.contains("receiving side of the pipe ended first") || text.contains("exit 5"),
        "{text}"
    );
    // The source was killed, not left running until the deadline.
    assert!(!matches!(e, Error::Timeout { .. }), "{e}");
}
