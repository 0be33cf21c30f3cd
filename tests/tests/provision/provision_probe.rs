//! The machine probe against a real private sshd on this host: real facts for a good
//! machine, a clear refusal for a missing binary or an unusable data dir, transport errors
//! (nothing listening, wrong key) for an unreachable machine, and the cheap liveness check.

use kunlun_provision::probe::{alive, probe, probe_and_check};
use kunlun_provision::recipe::{MariaDbRecipe, PostgresRecipe, Recipe};
use kunlun_provision::{Error, SshExecutor, SshTarget};
use kunlun_tests::{free_port, generate_key_pair, Sshd};

fn target(sshd: &Sshd) -> SshTarget {
    SshTarget::new(
        sshd.host(),
        sshd.port(),
        sshd.user(),
        &sshd.user_key().private,
        sshd.known_hosts(),
    )
}

#[tokio::test]
async fn a_good_machine_reports_its_facts() {
    let sshd = Sshd::start().expect("sshd");
    let ex = SshExecutor::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let dirs = vec![dir.path().display().to_string()];
    let mut bins = MariaDbRecipe::default().required_binaries();
    bins.extend(PostgresRecipe::default().required_binaries());
    let facts = probe_and_check(&ex, &target(&sshd), &dirs, &bins)
        .await
        .expect("this host can take both kinds of instances");
    assert!(facts.cpu_cores >= 1);
    assert!(facts.mem_mb > 0);
    assert!(facts.kernel.starts_with("Linux"), "{facts:?}");
    assert!(!facts.os.is_empty(), "{facts:?}");
    assert_eq!(facts.dirs.len(), 1);
    assert!(facts.dirs[0].free_mb.is_some_and(|mb| mb > 0), "{facts:?}");
    assert_eq!(facts.binaries.len(), bins.len());
    assert!(facts.missing_binaries.is_empty());
}

#[tokio::test]
async fn missing_binary_or_data_dir_is_a_clear_refusal() {
    let sshd = Sshd::start().expect("sshd");
    let ex = SshExecutor::default();
    // A dir that does not exist is fine when it can be created; one under a regular file
    // never can.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").expect("file");
    let under_file = file.join("kunlun-data").display().to_string();
    let creatable = dir.path().join("new/kunlun-data").display().to_string();
    let err = probe_and_check(
        &ex,
        &target(&sshd),
        &[under_file.clone(), creatable.clone()],
        &["/usr/sbin/mariadbd".into(), "/opt/none/bin/mysqld".into()],
    )
    .await
    .expect_err("refused");
    match &err {
        Error::Refused { reason, .. } => {
            assert!(reason.contains(&under_file), "{reason}");
            assert!(!reason.contains(&creatable), "{reason}");
            assert!(reason.contains("/opt/none/bin/mysqld"), "{reason}");
            assert!(!reason.contains("/usr/sbin/mariadbd"), "{reason}");
        }
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn unreachable_machine_or_bad_key_is_a_transport_error() {
    let sshd = Sshd::start().expect("sshd");
    let ex = SshExecutor::default();
    let mut t = target(&sshd);
    t.port = free_port(std::net::IpAddr::V4(sshd.ip()));
    let err = probe(&ex, &t, &[], &[]).await.expect_err("nothing listens");
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let stranger = generate_key_pair(dir.path(), "stranger").expect("key");
    let mut t = target(&sshd);
    t.auth = kunlun_provision::SshAuth::key(&stranger.private);
    let err = probe(&ex, &t, &[], &[])
        .await
        .expect_err("key not authorised");
    assert!(matches!(err, Error::AuthFailed { .. }), "{err}");
}

#[tokio::test]
async fn alive_answers_while_the_sshd_runs() {
    let sshd = Sshd::start().expect("sshd");
    let ex = SshExecutor::default();
    let t = target(&sshd);
    let deadline = std::time::Duration::from_secs(10);
    alive(&ex, &t, deadline).await.expect("alive");
    sshd.stop().expect("stop");
    let err = alive(&ex, &t, deadline).await.expect_err("stopped");
    assert!(err.is_transient(), "{err}");
    sshd.restart().expect("restart");
    alive(&ex, &t, deadline).await.expect("alive again");
}
