//! The Kubernetes manifests in `deploy/kubernetes`, checked without a cluster:
//!
//! - `scripts/validate-k8s` passes them: every resource against the Kubernetes API schemas
//!   (strict, two versions; kubernetes-validate ships the schemas, so no network is needed
//!   once its virtual environment exists), and the rules the schemas cannot know
//!   (`scripts/k8s_policy.py`: grace period vs. shutdown_timeout, probes on the metrics port,
//!   memory request = limit, non-root, read-only root, matching selectors);
//! - the validator is not a rubber stamp: a copy with a schema error and a copy that breaks
//!   sessiond's rules are both refused, each problem named;
//! - the ConfigMap's `sessiond.toml` really starts sessiond with files laid out as the
//!   Secret mounts them: the app user works over TLS, the monitor user reads STATS, the
//!   probes' `/health/ready` and `/health/live` answer 200 without the metrics token and
//!   `/metrics` wants it.
//!
//! The first run creates `target/pyenv/k8s-validate` from PyPI (pinned in
//! `deploy/kubernetes/requirements-validate.txt`); `.ci/run` needs nothing else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sessiond_tests::certs::{free_port, TestCerts};
use sessiond_tests::clients::{run_client, workspace};
use sessiond_tests::{binary, Daemon, Finished};

/// Runs `scripts/validate-k8s` with `args`.
fn validate(args: &[&Path]) -> Finished {
    let mut command = Command::new(workspace().join("scripts/validate-k8s"));
    command.args(args);
    run_client(command, b"")
}

/// The manifests, copied into a temporary directory where a test may break them.
fn copy_of_manifests() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = workspace().join("deploy/kubernetes");
    for entry in std::fs::read_dir(&source).expect("read deploy/kubernetes") {
        let path = entry.expect("directory entry").path();
        if path.is_file() {
            let name = path.file_name().expect("a file name");
            std::fs::copy(&path, dir.path().join(name)).expect("copy a manifest");
        }
    }
    dir
}

/// Replaces `from` by `to` in `file`, which must contain it: a manifest that no longer
/// has the text would otherwise make the test pass without breaking anything.
fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).expect("read manifest");
    assert!(
        text.contains(from),
        "{} no longer contains {from:?}",
        file.display()
    );
    std::fs::write(file, text.replacen(from, to, 1)).expect("write manifest");
}

#[test]
fn manifests_pass_the_kubernetes_schemas_and_sessionds_rules() {
    let out = validate(&[]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(out.status.success(), "validate-k8s: {}\n{all}", out.status);
    for line in [
        "passed for resource statefulset/sessiond against version 1.30",
        "passed for resource statefulset/sessiond against version 1.37",
        "passed for resource poddisruptionbudget/sessiond against version 1.37",
        "passed for resource service/sessiond against version 1.37",
        "passed for resource configmap/sessiond-config against version 1.37",
        "policy: passed",
    ] {
        assert!(all.contains(line), "no {line:?} in:\n{all}");
    }
}

#[test]
fn validator_refuses_schema_errors_and_broken_rules() {
    // Schema errors: replicas must be an integer, and a misspelt field (clusterIp), which
    // Kubernetes would drop in silence, leaving a Service with a virtual IP, is an unknown
    // field under strict validation. (The validator reports one error per resource.)
    let schema = copy_of_manifests();
    edit(
        &schema.path().join("statefulset.yaml"),
        "replicas: 3",
        "replicas: three",
    );
    edit(
        &schema.path().join("service.yaml"),
        "clusterIP: None",
        "clusterIp: None",
    );
    let out = validate(&[schema.path()]);
    assert_eq!(out.status.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("'three' is not of type 'integer'"), "{all}");
    assert!(all.contains("('clusterIp' was unexpected)"), "{all}");
    assert!(all.contains("FAIL the Service is not headless"), "{all}");

    // Well-formed, but wrong for sessiond: the grace period is shorter than the drain, the
    // root filesystem is writable, the PDB selects other pods, and memory is overcommitted.
    let rules = copy_of_manifests();
    let sts = rules.path().join("statefulset.yaml");
    edit(
        &sts,
        "terminationGracePeriodSeconds: 30",
        "terminationGracePeriodSeconds: 5",
    );
    edit(
        &sts,
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
    );
    edit(&sts, "memory: 1Gi", "memory: 512Mi");
    edit(
        &rules.path().join("pdb.yaml"),
        // The selector's line (indented deeper than the metadata's labels).
        "      app.kubernetes.io/component: session-store",
        "      app.kubernetes.io/component: cache",
    );
    let out = validate(&[rules.path()]);
    assert_eq!(out.status.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    for problem in [
        "FAIL terminationGracePeriodSeconds 5 is not at least 10 s beyond server.shutdown_timeout",
        "FAIL the root filesystem is writable",
        "FAIL memory request 512Mi differs from the limit 1Gi",
        "FAIL the PodDisruptionBudget does not select the StatefulSet's pods",
    ] {
        assert!(
            out.stdout.contains(problem),
            "no {problem:?} in:\n{}",
            out.stdout
        );
    }
    // Each schema still passes: these are the rules' findings alone.
    assert!(
        !out.stdout.contains("failed for resource"),
        "{}",
        out.stdout
    );
}

/// The Secret's keys, as the pod sees them under /etc/sessiond/secrets: made here.
fn secret_files(dir: &Path, certs: &TestCerts) {
    std::fs::copy(certs.server_cert(), dir.join("tls.crt")).expect("copy certificate");
    std::fs::copy(certs.server_key(), dir.join("tls.key")).expect("copy key");
    for (name, content) in [
        ("app_password", "app-secret-1\n"),
        ("monitor_password", "monitor-secret-2\n"),
        ("admin_password", "admin-secret-3\n"),
        ("metrics_token", "token-4\n"),
    ] {
        std::fs::write(dir.join(name), content).expect("write a secret file");
    }
}

/// One HTTP/1.0 GET on `addr`: the status line's code.
fn http_status(port: u16, path: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: sessiond\r\n\r\n").expect("send request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

#[test]
fn configmaps_sessiond_toml_serves_with_the_secrets_files() {
    let work = tempfile::tempdir().expect("temporary directory");
    let extracted = work.path().join("sessiond.toml");
    let out = validate(&[Path::new("--extract-config"), &extracted]);
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let secrets: PathBuf = work.path().join("secrets");
    std::fs::create_dir(&secrets).expect("secrets directory");
    let certs = TestCerts::new("kubernetes test CA");
    secret_files(&secrets, &certs);

    // The pod's paths and ports, moved to this machine: the secrets' directory, and
    // listeners on loopback ports (the pod binds every interface of its own network).
    let tls_port = free_port();
    let metrics_port = free_port();
    let mut config = std::fs::read_to_string(&extracted).expect("read extracted config");
    for (from, to) in [
        (
            "/etc/sessiond/secrets".to_string(),
            secrets.display().to_string(),
        ),
        (
            "\"0.0.0.0:7879\"".into(),
            format!("\"127.0.0.1:{tls_port}\""),
        ),
        (
            "\"0.0.0.0:9187\"".into(),
            format!("\"127.0.0.1:{metrics_port}\""),
        ),
    ] {
        assert!(config.contains(&from), "sessiond.toml no longer has {from}");
        config = config.replace(&from, &to);
    }
    // --data-dir (a temporary directory) stands in for the volume at /data.
    let daemon = Daemon::start_with_config(&config);

    let cli = |user: &str, args: &[&str]| {
        let mut command = Command::new(binary("sessiond-cli"));
        command
            .args([
                "--addr",
                &format!("127.0.0.1:{tls_port}"),
                "--tls",
                "--cacert",
            ])
            .arg(certs.ca())
            .args(["--user", user, "--password-file"])
            .arg(secrets.join(format!("{user}_password")))
            .args(args);
        run_client(command, b"")
    };
    let set = cli(
        "app",
        &["set", "session:k8s", "alice", "--ttl", "30m", "--nx"],
    );
    assert!(set.status.success(), "{}{}", set.stdout, set.stderr);
    let get = cli("app", &["get", "session:k8s"]);
    assert_eq!(get.stdout.trim(), "alice", "{}", get.stderr);
    let stats = cli("monitor", &["stats"]);
    assert!(
        stats.stdout.contains("memory_limit_bytes"),
        "{}",
        stats.stderr
    );
    let denied = cli("monitor", &["get", "session:k8s"]);
    assert!(denied.stderr.contains("NO_PERMISSION"), "{}", denied.stderr);

    // The kubelet's probes carry no token; Prometheus's scrape must.
    assert_eq!(http_status(metrics_port, "/health/ready"), 200);
    assert_eq!(http_status(metrics_port, "/health/live"), 200);
    assert_eq!(http_status(metrics_port, "/metrics"), 401);
    drop(daemon);
}
