use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ipnet::Ipv6Net;
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use nemo_testkit::daemons::{self, authed, TOKEN};
use nemo_testkit::etcd::{self, Etcd};
use nemo_testkit::{require, Process};
use tonic::transport::Channel;
use tonic::{Code, Request};

/// Where the controller under test keeps its state: its directory, or an
/// etcd started for the test (stopped when the test ends).
struct Backend(Option<Etcd>);

impl Backend {
    /// The backend of this suite's binary; `None` (the test skips) when
    /// etcd is wanted and missing, unless NEMO_REQUIRE_ETCD says it must run.
    fn start() -> Option<Backend> {
        if !ON_ETCD {
            return Some(Backend(None));
        }
        require(etcd::available(), "etcd missing (etcd-server)", "NEMO_REQUIRE_ETCD")
            .then(|| Backend(Some(Etcd::start(1))))
    }
}

fn start(dir: &Path, backend: &Backend) -> Process {
    start_with(dir, backend, "")
}

/// Starts the controller with `extra` appended to its config file.
fn start_with(dir: &Path, backend: &Backend, extra: &str) -> Process {
    let settings = format!("quarantine_secs = 3600\n{extra}");
    let (process, kept) = match &backend.0 {
        None => (daemons::controller(dir, &settings), "store=redb"),
        Some(etcd) => (
            daemons::controller_with_tables(
                dir,
                &settings,
                &format!(
                    "[etcd]\nendpoints = {:?}\nprefix = \"/nemo-api/\"\n",
                    etcd.endpoints()
                ),
            ),
            "store=etcd /nemo-api/",
        ),
    };
    assert!(process.log().contains(kept), "{}", process.log());
    process
}

async fn client(process: &Process) -> ControllerClient<Channel> {
    daemons::controller_client(process).await
}

async fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_owned()),
    }
}

#[tokio::test]
async fn every_call_and_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let server = start(dir.path(), &backend);
    let mut c = client(&server).await;

    // Without the token, or with a wrong one: UNAUTHENTICATED.
    let (status, message) = code(c.list_pools(pb::ListPoolsRequest {}).await).await;
    assert_eq!(status, Code::Unauthenticated);
    assert!(message.contains("authorization"), "{message}");
    let mut wrong = Request::new(pb::ListPoolsRequest {});
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        code(c.list_pools(wrong).await).await.0,
        Code::Unauthenticated
    );

    // Pools.
    let pool = c
        .create_pool(authed(pb::CreatePoolRequest {
            name: "core".into(),
            prefix: "2001:db8:100::/40".into(),
            tenant_length: 56,
            translation_prefix: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((pool.capacity, pool.allocated), (65536, 0));
    for (request, expected, field) in [
        (
            ("core", "2001:db8:200::/40", 56),
            Code::AlreadyExists,
            "core",
        ),
        (
            ("other", "2001:db8:100::/44", 56),
            Code::FailedPrecondition,
            "overlaps",
        ),
        (
            ("other", "2001:db8:zz::/40", 56),
            Code::InvalidArgument,
            "prefix",
        ),
        (
            ("other", "2001:db8:200::/40", 20),
            Code::InvalidArgument,
            "tenant_length",
        ),
        (
            ("bad name!", "2001:db8:200::/40", 56),
            Code::InvalidArgument,
            "name",
        ),
    ] {
        let (status, message) = code(
            c.create_pool(authed(pb::CreatePoolRequest {
                name: request.0.into(),
                prefix: request.1.into(),
                tenant_length: request.2,
                translation_prefix: String::new(),
            }))
            .await,
        )
        .await;
        assert_eq!(status, expected, "{request:?}: {message}");
        assert!(message.contains(field), "{request:?}: {message}");
    }
    assert_eq!(
        code(
            c.get_pool(authed(pb::GetPoolRequest {
                name: "nope".into()
            }))
            .await
        )
        .await
        .0,
        Code::NotFound
    );

    // Tenants and prefixes.
    c.create_tenant(authed(pb::CreateTenantRequest {
        name: "acme".into(),
    }))
    .await
    .unwrap();
    assert_eq!(
        code(
            c.create_tenant(authed(pb::CreateTenantRequest {
                name: "acme".into()
            }))
            .await
        )
        .await
        .0,
        Code::AlreadyExists
    );
    let allocation = c
        .allocate_prefix(authed(pb::AllocatePrefixRequest {
            tenant: "acme".into(),
            pool: "core".into(),
            length: 0,
            prefix: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allocation.prefix, "2001:db8:100::/56");
    for (tenant, pool, length, expected) in [
        ("nobody", "core", 0, Code::NotFound),
        ("acme", "nope", 0, Code::NotFound),
        ("acme", "core", 30, Code::InvalidArgument),
    ] {
        let (status, message) = code(
            c.allocate_prefix(authed(pb::AllocatePrefixRequest {
                tenant: tenant.into(),
                pool: pool.into(),
                length,
                prefix: String::new(),
            }))
            .await,
        )
        .await;
        assert_eq!(status, expected, "{tenant} {pool} {length}: {message}");
    }
    // A tenant moving in with its addresses asks for its prefix itself.
    let exact = |prefix: &str, length: u32| pb::AllocatePrefixRequest {
        tenant: "acme".into(),
        pool: "core".into(),
        length,
        prefix: prefix.into(),
    };
    let kept = c
        .allocate_prefix(authed(exact("2001:db8:100:4200::/56", 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.prefix, "2001:db8:100:4200::/56");
    for (prefix, length, expected, field) in [
        ("2001:db8:100:4200::/56", 0, Code::FailedPrecondition, "is allocated"),
        ("2001:db8:100::/56", 0, Code::FailedPrecondition, "is allocated"),
        ("2001:db8:100:4201::/56", 0, Code::InvalidArgument, "host bits"),
        ("2001:db8:200::/56", 0, Code::InvalidArgument, "not a block of pool"),
        ("2001:db8:100:4200::/64", 0, Code::InvalidArgument, "not a block of pool"),
        ("2001:db8:100:4300::/56", 52, Code::InvalidArgument, "length"),
        ("not a prefix", 0, Code::InvalidArgument, "prefix"),
    ] {
        let (status, message) = code(c.allocate_prefix(authed(exact(prefix, length))).await).await;
        assert_eq!(status, expected, "{prefix}: {message}");
        assert!(message.contains(field), "{prefix}: {message}");
    }
    // Released, it is held back: not even asked for by name.
    c.release_prefix(authed(pb::ReleasePrefixRequest {
        prefix: "2001:db8:100:4200::/56".into(),
    }))
    .await
    .unwrap();
    let (status, message) = code(
        c.allocate_prefix(authed(exact("2001:db8:100:4200::/56", 0)))
            .await,
    )
    .await;
    assert_eq!(status, Code::FailedPrecondition, "{message}");
    assert!(message.contains("held back until"), "{message}");
    let tenant = c
        .get_tenant(authed(pb::GetTenantRequest {
            name: "acme".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tenant.prefixes, vec!["2001:db8:100::/56".to_owned()]);
    assert_eq!(
        c.list_tenants(authed(pb::ListTenantsRequest {}))
            .await
            .unwrap()
            .into_inner()
            .tenants
            .len(),
        1
    );
    let listed = c
        .list_prefixes(authed(pb::ListPrefixesRequest {
            tenant: "acme".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.allocations.len(), 1);
    assert_eq!(
        code(
            c.delete_pool(authed(pb::DeletePoolRequest {
                name: "core".into()
            }))
            .await
        )
        .await
        .0,
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            c.delete_tenant(authed(pb::DeleteTenantRequest {
                name: "acme".into(),
                cascade: false
            }))
            .await
        )
        .await
        .0,
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            c.release_prefix(authed(pb::ReleasePrefixRequest {
                prefix: "2001:db8:999::/56".into()
            }))
            .await
        )
        .await
        .0,
        Code::NotFound
    );
    let released = c
        .delete_tenant(authed(pb::DeleteTenantRequest {
            name: "acme".into(),
            cascade: true,
        }))
        .await
        .unwrap()
        .into_inner()
        .released;
    assert_eq!(released, vec!["2001:db8:100::/56".to_owned()]);
    let pool = c
        .get_pool(authed(pb::GetPoolRequest {
            name: "core".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((pool.allocated, pool.quarantined), (0, 2));
    c.delete_pool(authed(pb::DeletePoolRequest {
        name: "core".into(),
    }))
    .await
    .unwrap();
    assert!(c
        .list_pools(authed(pb::ListPoolsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .pools
        .is_empty());
}

#[tokio::test]
async fn concurrent_clients_get_disjoint_prefixes() {
    const CLIENTS: usize = 8;
    const EACH: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let server = start(dir.path(), &backend);
    let mut c = client(&server).await;
    c.create_pool(authed(pb::CreatePoolRequest {
        name: "core".into(),
        prefix: "2001:db8:100::/40".into(),
        tenant_length: 56,
        translation_prefix: String::new(),
    }))
    .await
    .unwrap();
    for n in 0..CLIENTS {
        c.create_tenant(authed(pb::CreateTenantRequest {
            name: format!("t{n}"),
        }))
        .await
        .unwrap();
    }
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let mut c = client(&server).await;
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..EACH {
                let allocation = c
                    .allocate_prefix(authed(pb::AllocatePrefixRequest {
                        tenant: format!("t{n}"),
                        pool: "core".into(),
                        length: if n == 0 { 52 } else { 0 },
                        prefix: String::new(),
                    }))
                    .await
                    .unwrap()
                    .into_inner();
                got.push(allocation.prefix.parse::<Ipv6Net>().unwrap());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert_eq!(all.len(), CLIENTS * EACH);
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert!(
                !a.contains(&b.network()) && !b.contains(&a.network()),
                "{a} overlaps {b}"
            );
        }
    }
    let pool = c
        .get_pool(authed(pb::GetPoolRequest {
            name: "core".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pool.allocated, (CLIENTS * EACH) as u64);
}

#[tokio::test]
async fn acknowledged_allocations_survive_kill_9_and_watch_resumes_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let mut server = start(dir.path(), &backend);
    let mut c = client(&server).await;
    c.create_pool(authed(pb::CreatePoolRequest {
        name: "core".into(),
        prefix: "2001:db8:100::/40".into(),
        tenant_length: 56,
        translation_prefix: String::new(),
    }))
    .await
    .unwrap();
    c.create_tenant(authed(pb::CreateTenantRequest {
        name: "acme".into(),
    }))
    .await
    .unwrap();
    // A burst from several clients; kill -9 while it runs.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut c = client(&server).await;
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for _ in 0..200 {
                match c
                    .allocate_prefix(authed(pb::AllocatePrefixRequest {
                        tenant: "acme".into(),
                        pool: "core".into(),
                        length: 0,
                        prefix: String::new(),
                    }))
                    .await
                {
                    Ok(response) => acknowledged.push(response.into_inner().prefix),
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    server.kill();
    let mut acknowledged = BTreeSet::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    assert!(
        !acknowledged.is_empty(),
        "nothing was acknowledged before the kill"
    );

    let server = start(dir.path(), &backend);
    let mut c = client(&server).await;
    let on_disk: BTreeSet<String> = c
        .list_prefixes(authed(pb::ListPrefixesRequest {
            tenant: "acme".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .allocations
        .into_iter()
        .map(|a| a.prefix)
        .collect();
    // Nothing acknowledged was lost; anything else was whole or absent.
    assert!(
        acknowledged.is_subset(&on_disk),
        "lost: {:?}",
        acknowledged.difference(&on_disk).collect::<Vec<_>>()
    );
    let pool = c
        .get_pool(authed(pb::GetPoolRequest {
            name: "core".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pool.allocated, on_disk.len() as u64);

    // The history: 2 setup changes and one per allocation on disk, with no
    // gaps; resuming from the middle sees the rest exactly once, then live
    // changes.
    let total = 2 + on_disk.len() as u64;
    let middle = total / 2;
    let mut stream = c
        .watch_events(authed(pb::WatchEventsRequest {
            from_revision: middle,
            history_only: false,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut revisions = Vec::new();
    while (revisions.len() as u64) < total - middle {
        revisions.push(stream.message().await.unwrap().unwrap().revision);
    }
    assert_eq!(revisions, ((middle + 1)..=total).collect::<Vec<_>>());
    c.create_tenant(authed(pb::CreateTenantRequest {
        name: "late".into(),
    }))
    .await
    .unwrap();
    let live = stream.message().await.unwrap().unwrap();
    assert_eq!(
        (live.revision, live.kind.as_str(), live.subject.as_str()),
        (total + 1, "tenant_created", "late")
    );
}

#[tokio::test]
async fn nemoctl_drives_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let server = start(dir.path(), &backend);
    let endpoint = format!("http://{}", server.field("grpc"));
    let nemoctl = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_nemoctl"))
            .args(["--endpoint", &endpoint])
            .args(args)
            .env("NEMO_TOKEN", TOKEN)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, out, err) = nemoctl(&[
        "pool",
        "create",
        "core",
        "2001:db8:100::/40",
        "--tenant-length",
        "56",
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    assert!(nemoctl(&["tenant", "create", "acme"]).0);
    let (ok, out, err) = nemoctl(&[
        "--output", "json", "prefix", "allocate", "acme", "--pool", "core",
    ]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["prefix"], "2001:db8:100::/56");
    let (ok, out, err) = nemoctl(&[
        "prefix",
        "allocate",
        "acme",
        "--pool",
        "core",
        "--prefix",
        "2001:db8:100:8800::/56",
    ]);
    assert!(ok && out.contains("2001:db8:100:8800::/56"), "{out}{err}");
    let (ok, out, _) = nemoctl(&["prefix", "list", "acme"]);
    assert!(ok && out.contains("2001:db8:100::/56"), "{out}");
    let started = std::time::Instant::now();
    let (ok, out, _) = nemoctl(&["events"]);
    assert!(ok, "{out}");
    // The whole history (four changes so far, under a header), ended by
    // the controller where it stands, not by a silence.
    assert!(out.starts_with("REVISION"), "{out}");
    assert_eq!(out.lines().count(), 1 + 4, "{out}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Each event with its time (UTC) and what it did.
    let allocated = out
        .lines()
        .find(|l| l.contains("prefix_allocated"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(allocated.contains("Z  prefix_allocated"), "{allocated}");
    assert!(allocated.contains("\"pool\":\"core\""), "{allocated}");
    // One JSON shape per kind of answer (OPERATIONS.md, "Inspect"):
    // records are an array of objects, even one record.
    for (args, records) in [
        (&["pool", "show", "core"][..], 1),
        (&["tenant", "show", "acme"], 1),
        (&["tenant", "list"], 1),
        (&["prefix", "list", "acme"], 2),
        (&["hv", "register", "hv-json"], 1),
        (&["hv", "list"], 1),
        (&["ha", "list"], 0),
        (&["placements"], 0),
        (&["events"], 5),
        (&["tenant", "create", "json-shape"], 1),
        (&["tenant", "delete", "json-shape"], 1),
    ] {
        let (ok, out, err) = nemoctl(&[&["-o", "json"], args].concat());
        assert!(ok, "{args:?}: {err}");
        let answer: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?} is not an array of objects ({e}): {out}"));
        assert_eq!(answer.len(), records, "{args:?}: {out}");
    }
    let (_, out, _) = nemoctl(&["-o", "json", "events"]);
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(events[0]["detail"].is_object(), "{out}");
    let (ok, out, err) = nemoctl(&["-o", "json", "status"]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["hypervisors"][0]["name"], "hv-json", "{out}");
    // Errors come out as gRPC's code name and the message, exit 1.
    let (ok, _, err) = nemoctl(&["tenant", "create", "acme"]);
    assert!(!ok);
    assert!(err.contains("ALREADY_EXISTS: tenant \"acme\""), "{err}");
    // Global flags after the subcommand, as before it.
    let (ok, out, err) = nemoctl(&["prefix", "list", "acme", "--output", "json"]);
    assert!(ok, "{err}");
    assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{out}");
    // The token from a file instead of the environment or the command line.
    let token_file = dir.path().join("operator.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_nemoctl"))
        .args(["tenant", "list", "--endpoint", &endpoint, "--token-file"])
        .arg(&token_file)
        .env_remove("NEMO_TOKEN")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("acme"));
    // An endpoint without its scheme, one that refuses, one that never
    // answers: each says what is wrong, within the timeout.
    let unreachable = |endpoint: &str, extra: &[&str]| {
        let started = std::time::Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_nemoctl"))
            .args(["tenant", "list", "--endpoint", endpoint])
            .args(extra)
            .env("NEMO_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(!output.status.success());
        (
            String::from_utf8_lossy(&output.stderr).into_owned(),
            started.elapsed(),
        )
    };
    let (err, _) = unreachable("[::1]:1", &[]);
    assert!(err.contains("needs http:// or https://"), "{err}");
    let (err, _) = unreachable("http://[::1]:1", &[]);
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    let silent = std::net::TcpListener::bind("[::1]:0").unwrap();
    let silent_endpoint = format!("http://{}", silent.local_addr().unwrap());
    let (err, took) = unreachable(&silent_endpoint, &["--timeout", "1"]);
    assert!(err.contains("no answer within 1 s"), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Shell completion that bash takes, naming the commands.
    let (ok, script, err) = nemoctl(&["completions", "bash"]);
    assert!(ok, "{err}");
    assert!(script.contains("bindings") && script.contains("hand-over"));
    let sourced = Command::new("bash")
        .args(["-c", "source /dev/stdin && complete -p nemoctl"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut bash| {
            use std::io::Write;
            bash.stdin.take().unwrap().write_all(script.as_bytes())?;
            bash.wait_with_output()
        })
        .unwrap();
    assert!(
        String::from_utf8_lossy(&sourced.stdout).contains("-F _nemoctl nemoctl"),
        "{sourced:?}"
    );
}

/// Runs `openssl` with `args` in `dir`; panics with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn tls_serves_only_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let d = dir.path();
    // A CA and a server certificate for [::1], as an operator would issue.
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=nemo test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:::1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    // A key that is not the certificate's: refused at --check, naming the
    // line, not at the first connection.
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "other.key",
        ],
    );
    std::fs::write(d.join("token"), format!("{TOKEN}\n")).unwrap();
    let config = d.join("mismatched.toml");
    let controller = Path::new(env!("CARGO_BIN_EXE_nemo-controller"));
    nemo_testkit::refused_at_check(
        controller,
        &config,
        &format!(
            "listen = \"[::1]:0\"\nstore = \"{}\"\ntoken_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            d.join("store").display(),
            d.join("token").display(),
            d.join("server.pem").display(),
            d.join("other.key").display()
        ),
        "mismatched.toml:4: TLS certificate or key",
    );
    // Half a TLS setup is refused, naming the line that is there.
    for (line, expected) in [
        (
            "tls_cert_file",
            "mismatched.toml:4: tls_cert_file needs tls_key_file",
        ),
        (
            "tls_key_file",
            "mismatched.toml:4: tls_key_file needs tls_cert_file",
        ),
    ] {
        nemo_testkit::refused_at_check(
            controller,
            &config,
            &format!(
                "listen = \"[::1]:0\"\nstore = \"{}\"\ntoken_file = \"{}\"\n{line} = \"{}\"\n",
                d.join("store").display(),
                d.join("token").display(),
                d.join("server.pem").display()
            ),
            expected,
        );
    }
    let server = start_with(
        d,
        &backend,
        &format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            d.join("server.pem").display(),
            d.join("server.key").display()
        ),
    );
    assert_eq!(server.field("tls"), "on");
    let port = server.field("grpc").rsplit(':').next().unwrap().to_owned();
    let nemoctl = |endpoint: &str, ca: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nemoctl"));
        command.args(["--endpoint", endpoint]);
        if let Some(ca) = ca {
            command.arg("--ca").arg(ca);
        }
        let output = command
            .args(["tenant", "create", "acme"])
            .env("NEMO_TOKEN", TOKEN)
            .env_remove("NEMO_CA")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let https = format!("https://[::1]:{port}");
    // Plain HTTP/2 to a TLS listener, and TLS without trusting the CA, fail.
    let (ok, err) = nemoctl(&format!("http://[::1]:{port}"), None);
    assert!(!ok, "plaintext accepted by a TLS listener");
    assert!(!err.is_empty());
    // (the leaf alone is not the issuer: a trust store without the CA)
    let (ok, _) = nemoctl(&https, Some(&d.join("server.pem")));
    assert!(!ok, "a client that does not trust the CA connected");
    // Trusting the CA, the call goes through, once.
    let (ok, err) = nemoctl(&https, Some(&d.join("ca.pem")));
    assert!(ok, "{err}");
    let (ok, err) = nemoctl(&https, Some(&d.join("ca.pem")));
    assert!(!ok && err.contains("ALREADY_EXISTS"), "{err}");
}

/// Sets up a home agent, two hypervisors, a tenant with a prefix and a
/// mobile router.
async fn world(c: &mut ControllerClient<Channel>) -> pb::MobileRouter {
    c.register_home_agent(authed(pb::RegisterHomeAgentRequest {
        home_agent: Some(pb::HomeAgent {
            name: "ha1".into(),
            address: "2001:db8:1::1".into(),
            home_prefix: "2001:db8:1::/64".into(),
            udp_endpoint: "[2001:db8:1::1]:4191".into(),
        }),
    }))
    .await
    .unwrap();
    for hv in ["hv-a", "hv-b"] {
        c.register_hypervisor(authed(pb::RegisterHypervisorRequest { name: hv.into() }))
            .await
            .unwrap();
    }
    c.create_pool(authed(pb::CreatePoolRequest {
        name: "core".into(),
        prefix: "2001:db8:100::/40".into(),
        tenant_length: 56,
        translation_prefix: String::new(),
    }))
    .await
    .unwrap();
    c.create_tenant(authed(pb::CreateTenantRequest {
        name: "acme".into(),
    }))
    .await
    .unwrap();
    c.allocate_prefix(authed(pb::AllocatePrefixRequest {
        tenant: "acme".into(),
        pool: "core".into(),
        length: 0,
        prefix: String::new(),
    }))
    .await
    .unwrap();
    c.create_mobile_router(authed(pb::CreateMobileRouterRequest {
        tenant: "acme".into(),
        home_agent: "ha1".into(),
        algorithm: String::new(),
        explicit_mode: true,
    }))
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test]
async fn identities_placements_and_the_daemons_streams() {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let server = start(dir.path(), &backend);
    let mut c = client(&server).await;
    let mr = world(&mut c).await;
    assert_eq!(mr.home_address, "2001:db8:1::100");
    assert_eq!(mr.spi, 0x1000);
    assert_eq!(mr.key.len(), 64, "a fresh 32-octet key, hex");
    assert_eq!(mr.prefixes, vec!["2001:db8:100::/56".to_owned()]);
    // The key is shown once: not by Get, never in the history.
    let shown = c
        .get_mobile_router(authed(pb::GetMobileRouterRequest {
            tenant: "acme".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(shown.key.is_empty());
    let mut events = c
        .watch_events(authed(pb::WatchEventsRequest { from_revision: 0, history_only: false }))
        .await
        .unwrap()
        .into_inner();
    // Home agent, two hypervisors, pool, tenant, prefix, mobile router.
    for _ in 0..7 {
        let event = events.message().await.unwrap().unwrap();
        assert!(
            !event.detail_json.contains(&mr.key),
            "key leaked into the history"
        );
    }

    // The home agent's stream: the current authorization, then changes.
    let mut authorizations = c
        .watch_authorizations(authed(pb::WatchAuthorizationsRequest {
            home_agent: "ha1".into(),
            from_revision: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    let first = authorizations.message().await.unwrap().unwrap();
    let authorized = first.mobile_router.unwrap();
    assert_eq!(
        (authorized.home_address.as_str(), authorized.key.as_str()),
        ("2001:db8:1::100", mr.key.as_str())
    );
    assert_eq!(authorized.prefixes, vec!["2001:db8:100::/56".to_owned()]);
    // The snapshot (one authorization) ends with its mark.
    let end = authorizations.message().await.unwrap().unwrap();
    assert!(end.snapshot_end && end.home_address.is_empty(), "{end:?}");
    let rotated = c
        .rotate_key(authed(pb::RotateKeyRequest {
            tenant: "acme".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.key, mr.key);
    let update = authorizations.message().await.unwrap().unwrap();
    assert_eq!(update.mobile_router.unwrap().key, rotated.key);

    // The hypervisors' streams follow placement and migration.
    let mut at_a = c
        .watch_placements(authed(pb::WatchPlacementsRequest {
            hypervisor: "hv-a".into(),
            from_revision: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut at_b = c
        .watch_placements(authed(pb::WatchPlacementsRequest {
            hypervisor: "hv-b".into(),
            from_revision: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    // Nothing is placed yet: each snapshot is only its end.
    for stream in [&mut at_a, &mut at_b] {
        assert!(stream.message().await.unwrap().unwrap().snapshot_end);
    }
    c.place_tenant(authed(pb::PlaceTenantRequest {
        tenant: "acme".into(),
        hypervisor: "hv-a".into(),
        reason: "initial".into(),
        delivery: pb::Delivery::Now.into(),
    }))
    .await
    .unwrap();
    let placed = at_a.message().await.unwrap().unwrap();
    assert_eq!(placed.tenant, "acme");
    assert_eq!(placed.last_sequence, None, "no binding reported yet");
    let placed_mr = placed.mobile_router.unwrap();
    assert_eq!(placed_mr.key, rotated.key);
    assert_eq!(
        placed.home_agent.unwrap().udp_endpoint,
        "[2001:db8:1::1]:4191"
    );
    // The home agent accepted sequence 4242 from hv-a; the instance on
    // hv-b hears it with its placement and starts after it (one round trip
    // of 135 saved). A number past 16 bits is refused, naming the field.
    let report = |sequence: u32| pb::ReportBindingRequest {
        home_agent: "ha1".into(),
        home_address: "2001:db8:1::100".into(),
        care_of_address: "2001:db8:2::10".into(),
        prefixes: vec![],
        removed: false,
        reason: "registration".into(),
        sequence,
        outer_address: String::new(),
    };
    let (status, message) = code(c.report_binding(authed(report(70_000))).await).await;
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.starts_with("sequence:"), "{message}");
    // An IPv4 care-of address behind a NAT (RFC 5555): the address and the
    // NAT's mapping the home agent tunnels to; a mapping that is not an
    // IPv4 address and port is refused, naming the field.
    let behind_nat = pb::ReportBindingRequest {
        care_of_address: "192.0.2.130".into(),
        outer_address: "192.0.2.99:40012".into(),
        ..report(4200)
    };
    c.report_binding(authed(behind_nat.clone())).await.unwrap();
    let (status, message) = code(
        c.report_binding(authed(pb::ReportBindingRequest {
            outer_address: "192.0.2.99".into(),
            ..behind_nat
        }))
        .await,
    )
    .await;
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.starts_with("outer_address:"), "{message}");
    c.report_binding(authed(report(4242))).await.unwrap();
    // Placed as the live migration starts: hv-b passes the tenant's
    // traffic once its VM announces itself there (issue 29).
    let placed = c
        .place_tenant(authed(pb::PlaceTenantRequest {
            tenant: "acme".into(),
            hypervisor: "hv-b".into(),
            reason: "migration".into(),
            delivery: pb::Delivery::OnAnnouncement.into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(placed.delivery(), pb::Delivery::OnAnnouncement);
    let left = at_a.message().await.unwrap().unwrap();
    assert_eq!(
        (left.tenant.as_str(), left.mobile_router.is_none()),
        ("acme", true)
    );
    let arrived = at_b.message().await.unwrap().unwrap();
    assert_eq!(arrived.last_sequence, Some(4242));
    assert_eq!(arrived.delivery(), pb::Delivery::OnAnnouncement);
    assert_eq!(
        arrived.mobile_router.unwrap().home_address,
        "2001:db8:1::100"
    );

    // Placing it where it is (an orchestrator's retry) changes nothing:
    // the same placement back, no event for the hypervisor.
    let revision = c
        .list_placements(authed(pb::ListPlacementsRequest {}))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .place_tenant(authed(pb::PlaceTenantRequest {
            tenant: "acme".into(),
            hypervisor: "hv-b".into(),
            reason: "retried".into(),
            delivery: pb::Delivery::Now.into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(Some(&again), revision.placements.iter().find(|p| p.tenant == "acme"));
    assert_eq!(again.reason, "migration");
    // The operator's overview: where the tenant is, its home agent; no
    // binding column without a home agent's admin API to ask.
    let endpoint = format!("http://{}", server.field("grpc"));
    let status = Command::new(env!("CARGO_BIN_EXE_nemoctl"))
        .args(["status", "--output", "json", "--endpoint", &endpoint])
        .args(["--ha-admin", "http://[::1]:1"])
        .env("NEMO_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let overview: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let acme = &overview["tenants"][0];
    assert_eq!(acme["name"], "acme", "{overview}");
    assert_eq!(acme["hypervisor"], "hv-b", "{overview}");
    assert_eq!(acme["home_agent"], "ha1", "{overview}");
    assert_eq!(acme["home_address"], "2001:db8:1::100", "{overview}");
    assert_eq!(acme["prefixes"][0], "2001:db8:100::/56", "{overview}");
    assert!(acme["care_of_address"].is_null(), "{overview}");
    assert!(
        overview["bindings_from"]
            .as_str()
            .is_some_and(|s| s.starts_with("none (")),
        "{overview}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), at_b.message())
            .await
            .is_err(),
        "a placement that changed nothing was sent to the hypervisor"
    );

    // Errors.
    let (status, _) = code(
        c.place_tenant(authed(pb::PlaceTenantRequest {
            tenant: "acme".into(),
            hypervisor: "hv-z".into(),
            reason: String::new(),
            delivery: pb::Delivery::Now.into(),
        }))
        .await,
    )
    .await;
    assert_eq!(status, Code::NotFound);
    let (status, message) = code(
        c.place_tenant(authed(pb::PlaceTenantRequest {
            tenant: "acme".into(),
            hypervisor: "hv-a".into(),
            reason: String::new(),
            delivery: 7,
        }))
        .await,
    )
    .await;
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.starts_with("delivery:"), "{message}");
    let (status, message) = code(
        c.create_mobile_router(authed(pb::CreateMobileRouterRequest {
            tenant: "acme".into(),
            home_agent: "ha1".into(),
            algorithm: "md5".into(),
            explicit_mode: false,
        }))
        .await,
    )
    .await;
    assert_eq!(status, Code::InvalidArgument, "{message}");
    assert_eq!(
        code(
            c.delete_mobile_router(authed(pb::DeleteMobileRouterRequest {
                tenant: "acme".into()
            }))
            .await
        )
        .await
        .0,
        Code::FailedPrecondition,
        "placed tenants keep their mobile router"
    );
    c.unplace_tenant(authed(pb::UnplaceTenantRequest {
        tenant: "acme".into(),
        reason: "gone".into(),
    }))
    .await
    .unwrap();
    let gone = at_b.message().await.unwrap().unwrap();
    assert!(gone.mobile_router.is_none());
    assert!(!gone.moved_away, "unplaced: the mobile router deregisters");
    c.delete_mobile_router(authed(pb::DeleteMobileRouterRequest {
        tenant: "acme".into(),
    }))
    .await
    .unwrap();
    let revoked = authorizations.message().await.unwrap().unwrap();
    assert_eq!(
        (
            revoked.home_address.as_str(),
            revoked.mobile_router.is_none()
        ),
        ("2001:db8:1::100", true)
    );
}

/// The allocation load generator still works (a smoke run, not a benchmark:
/// no timing is asserted), and what it reports is what the controller holds.
#[tokio::test]
async fn load_generator_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let process = start(dir.path(), &backend);
    let output = tokio::task::spawn_blocking({
        let endpoint = format!("http://{}", process.field("grpc"));
        let token = dir.path().join("token");
        move || {
            Command::new(env!("CARGO_BIN_EXE_controller-loadgen"))
                .args(["--endpoint", &endpoint, "--clients", "4", "--seconds", "1"])
                .arg("--token-file")
                .arg(token)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str| -> u64 { nemo_testkit::field(&report, name).parse().unwrap() };
    assert_eq!(field("failed"), 0, "{report}");
    let allocated = field("calls");
    assert!(allocated > 0, "{report}");
    let pool = client(&process)
        .await
        .get_pool(authed(pb::GetPoolRequest {
            name: "bench".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    // Calls still in flight at the deadline are answered but not counted.
    let held = pool.allocated;
    assert!(
        (allocated..=allocated + 4).contains(&held),
        "{held} held, {allocated} reported"
    );
}

/// Hostile input is refused with a bounded answer and stored nowhere: a
/// 1 MiB reason, an endpoint that is no endpoint, a request past the size
/// bound.
#[tokio::test]
async fn oversized_and_malformed_fields_are_refused_with_bounded_messages() {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let process = start(dir.path(), &backend);
    let mut c = client(&process).await;
    world(&mut c).await;
    let huge = "x".repeat(1 << 20);
    let (status, message) = code(
        c.place_tenant(authed(pb::PlaceTenantRequest {
            tenant: "acme".into(),
            hypervisor: "hv-a".into(),
            reason: "r".repeat(300),
            delivery: pb::Delivery::Now.into(),
        }))
        .await,
    )
    .await;
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.starts_with("reason:"), "{message}");
    let (status, message) = code(
        c.place_tenant(authed(pb::PlaceTenantRequest {
            tenant: huge.clone(),
            hypervisor: "hv-a".into(),
            reason: String::new(),
            delivery: pb::Delivery::Now.into(),
        }))
        .await,
    )
    .await;
    assert_ne!(status, Code::Ok);
    assert!(message.len() <= 600, "{} octets echoed", message.len());
    let (status, message) = code(
        c.register_home_agent(authed(pb::RegisterHomeAgentRequest {
            home_agent: Some(pb::HomeAgent {
                name: "ha2".into(),
                address: "2001:db8:1::2".into(),
                home_prefix: "2001:db8:1::/64".into(),
                udp_endpoint: "not a url".into(),
            }),
        }))
        .await,
    )
    .await;
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.starts_with("home_agent.udp_endpoint:"), "{message}");
    let (status, message) = code(
        c.report_binding(authed(pb::ReportBindingRequest {
            home_agent: "ha1".into(),
            home_address: "2001:db8:1::100".into(),
            care_of_address: "2001:db8:2::10".into(),
            prefixes: vec![],
            removed: false,
            reason: huge,
            sequence: 1,
            outer_address: String::new(),
        }))
        .await,
    )
    .await;
    assert!(
        matches!(
            status,
            Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted
        ),
        "{status:?} {message}"
    );
    assert!(message.len() <= 600, "{} octets echoed", message.len());
    // Nothing of it entered the history.
    let mut events = c
        .watch_events(authed(pb::WatchEventsRequest { from_revision: 0, history_only: false }))
        .await
        .unwrap()
        .into_inner();
    while let Ok(Ok(Some(event))) =
        tokio::time::timeout(Duration::from_millis(300), events.message()).await
    {
        assert!(event.subject.len() < 100, "{event:?}");
        assert_ne!(event.kind, "binding_reported", "{event:?}");
        assert_ne!(event.kind, "tenant_placed", "{event:?}");
    }
}

/// Idle connections past the descriptor limit neither take the controller
/// down nor spin a core: with 128 descriptors, 300 silent connections are
/// capped and closed after the handshake timeout, and calls still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_exhaust_the_controller() {
    if ON_ETCD {
        // The connection limits are the transport's, whatever the store:
        // once is enough.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"[::1]:0\"\nstore = \"{}\"\ntoken_file = \"{}\"\n\
             max_connections = 64\nhandshake_timeout_ms = 400\n",
            dir.path().join("store").display(),
            token.display()
        ),
    )
    .unwrap();
    let mut command = Command::new("prlimit");
    command
        .args(["--nofile=128:128", "--"])
        .arg(env!("CARGO_BIN_EXE_nemo-controller"))
        .arg("--config")
        .arg(&config);
    let process = Process::start(command, dir.path().join("controller.log"));
    let address: std::net::SocketAddr = process.field("grpc").parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(stream) = tokio::net::TcpStream::connect(address).await {
            idle.push(stream);
        }
    }
    let pid = process.pid();
    let cpu = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let spent = cpu() - before;
    assert!(
        spent < 30,
        "{spent} ticks of CPU in 1 s with idle connections: spinning"
    );
    // The silent ones were closed (or refused): a real client is served
    // while they are still held open on our side.
    let pool = tokio::time::timeout(Duration::from_secs(5), async {
        client(&process)
            .await
            .list_pools(authed(pb::ListPoolsRequest {}))
            .await
    })
    .await
    .expect("the controller answers again")
    .unwrap();
    assert!(pool.into_inner().pools.is_empty());
    drop(idle);
    let log = process.log();
    assert!(log.contains("connection refused: too many open"), "{log}");
}

/// Client-side TCP connections of this process to `port` that are still
/// established (`/proc/net/tcp6`, state 01): one the server closed is in
/// CLOSE_WAIT on this side.
fn established_to(port: u16) -> usize {
    // This process's sockets only (by inode): other tests, and processes
    // they start, run at once and may hold connections to a port of the
    // same number elsewhere (seen once in CI: 6 where 4 were this test's).
    let own: BTreeSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp6").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2].rsplit(':').next().unwrap();
            u16::from_str_radix(remote_port, 16).unwrap() == port
                && fields[3] == "01"
                && own.contains(fields[9])
        })
        .count()
}

/// Issue 32, item 9: a connection that makes no call with a valid token
/// within `handshake_timeout_ms` (none, one with a wrong token, or only
/// health checks, which need none) is closed; one that made such a call
/// stays open past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_an_authenticated_call_is_closed() {
    if ON_ETCD {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let server = start_with(dir.path(), &backend, "handshake_timeout_ms = 500
");
    let address: std::net::SocketAddr = server.field("grpc").parse().unwrap();
    let channel = || async {
        Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let mut good = ControllerClient::new(channel().await);
    good.list_pools(authed(pb::ListPoolsRequest {})).await.unwrap();
    let mut wrong = ControllerClient::new(channel().await);
    let mut request = Request::new(pb::ListPoolsRequest {});
    request.metadata_mut().insert(
        "authorization",
        "Bearer not-the-token-0123456789".parse().unwrap(),
    );
    assert_eq!(
        wrong.list_pools(request).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    let _silent = channel().await;
    assert_eq!(established_to(address.port()), 4);
    let closed = async {
        while established_to(address.port()) > 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} connections open 5 s after the 500 ms deadline",
                established_to(address.port())
            )
        });
    // The one that is left is the authenticated one: it still works,
    // on the same connection, past the deadline.
    tokio::time::sleep(Duration::from_millis(600)).await;
    good.list_pools(authed(pb::ListPoolsRequest {})).await.unwrap();
    assert_eq!(established_to(address.port()), 1);
}

#[tokio::test]
async fn calls_are_counted_by_method_and_code_in_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let server = start_with(dir.path(), &backend, "[metrics]\nlisten = \"[::1]:0\"\n");
    let mut c = client(&server).await;
    c.create_pool(authed(pb::CreatePoolRequest {
        name: "core".into(),
        prefix: "2001:db8:100::/40".into(),
        tenant_length: 56,
        translation_prefix: String::new(),
    }))
    .await
    .unwrap();
    let missing = c
        .get_pool(authed(pb::GetPoolRequest {
            name: "nope".into(),
        }))
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let unauthenticated = c.list_pools(pb::ListPoolsRequest {}).await;
    assert_eq!(unauthenticated.unwrap_err().code(), Code::Unauthenticated);
    let _watch = c
        .watch_events(authed(pb::WatchEventsRequest { from_revision: 0, history_only: false }))
        .await
        .unwrap()
        .into_inner();
    let address = server.field("metrics");
    let metrics = tokio::task::spawn_blocking(move || nemo_testkit::scrape_metrics(address))
        .await
        .unwrap();
    for line in [
        "nemo_controller_calls_total{method=\"CreatePool\",code=\"0\"} 1",
        "nemo_controller_calls_total{method=\"GetPool\",code=\"5\"} 1",
        "nemo_controller_calls_total{method=\"ListPools\",code=\"16\"} 1",
        "nemo_controller_calls_total{method=\"WatchEvents\",code=\"0\"} 1",
        "nemo_controller_revision 1",
        "nemo_controller_watchers 1",
        "nemo_controller_call_seconds_count{method=\"CreatePool\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

/// The history keeps its newest `keep` changes: the upkeep trims older
/// ones (with etcd, the replica elected to); a watch resuming before them
/// is refused OUT_OF_RANGE and names where the history starts, a daemon's
/// watch from 0 takes the whole state and hears where it ends.
#[tokio::test]
async fn the_history_is_trimmed_and_a_watch_from_before_it_is_told_to_start_over() {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let server = start_with(
        dir.path(),
        &backend,
        "[metrics]\nlisten = \"[::1]:0\"\n[history]\nkeep = 5\ntrim_every_secs = 1\n",
    );
    let mut c = client(&server).await;
    for n in 0..20 {
        c.create_tenant(authed(pb::CreateTenantRequest {
            name: format!("t{n}"),
        }))
        .await
        .unwrap();
    }
    c.register_hypervisor(authed(pb::RegisterHypervisorRequest {
        name: "hv1".into(),
    }))
    .await
    .unwrap();
    // 21 changes: the newest 5 (17..=21) stay once the upkeep has run.
    let oldest = || async { daemons::oldest_event(&c).await.map(|e| e.revision) };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while oldest().await != Some(17) {
        assert!(
            std::time::Instant::now() < deadline,
            "the history still starts at {:?}:\n{}",
            oldest().await,
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, message) = code(
        c.watch_events(authed(pb::WatchEventsRequest {
            from_revision: 3,
            history_only: false,
        }))
        .await,
    )
    .await;
    assert_eq!(status, Code::OutOfRange, "{message}");
    assert!(message.contains("starts at revision 17"), "{message}");
    // From just before the oldest kept: all of them, exactly once.
    let mut kept = c
        .watch_events(authed(pb::WatchEventsRequest {
            from_revision: 16,
            history_only: true,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut revisions = Vec::new();
    while let Some(event) = kept.message().await.unwrap() {
        revisions.push(event.revision);
    }
    assert_eq!(revisions, (17..=21).collect::<Vec<_>>());
    let (status, message) = code(
        c.watch_placements(authed(pb::WatchPlacementsRequest {
            hypervisor: "hv1".into(),
            from_revision: 2,
        }))
        .await,
    )
    .await;
    assert_eq!(status, Code::OutOfRange, "{message}");
    // Watching again from 0: the state (nothing placed here), then its end.
    let mut fresh = c
        .watch_placements(authed(pb::WatchPlacementsRequest {
            hypervisor: "hv1".into(),
            from_revision: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    let end = fresh.message().await.unwrap().unwrap();
    assert!(end.snapshot_end && end.tenant.is_empty(), "{end:?}");
    assert_eq!(end.revision, 21);
    let address = server.field("metrics");
    let metrics = tokio::task::spawn_blocking(move || nemo_testkit::scrape_metrics(address))
        .await
        .unwrap();
    assert!(
        metrics.contains("nemo_controller_maintainer 1"),
        "{metrics}"
    );
}

/// Under systemd (`Type=notify`), the controller says it is ready once it
/// serves: READY=1 on the socket NOTIFY_SOCKET names, with its ready line.
#[test]
fn the_service_manager_hears_when_it_serves() {
    if ON_ETCD {
        // The same with any store: once is enough.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify");
    let manager = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"[::1]:0\"\nstore = \"{}\"\ntoken_file = \"{}\"\n",
            dir.path().join("store").display(),
            dir.path().join("token").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_nemo-controller"));
    command
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket);
    let process = Process::start(command, dir.path().join("controller.log"));
    let mut buffer = [0u8; 512];
    let n = manager.recv(&mut buffer).unwrap();
    let said = String::from_utf8_lossy(&buffer[..n]);
    assert!(said.starts_with("READY=1\nSTATUS=nemo-controller ready"), "{said}");
    assert!(said.contains(&format!("grpc={}", process.field("grpc"))), "{said}");
}

/// `request` with the request id `id` (gRPC metadata `nemo-request-id`).
fn with_id<T>(id: &str, message: T) -> Request<T> {
    let mut request = authed(message);
    request
        .metadata_mut()
        .insert(nemo_controller::api::REQUEST_ID, id.parse().unwrap());
    request
}

/// Issue 33: a call sent again with its request id is answered as the
/// first was and made once, also across a kill -9; the same id on another
/// call, and a malformed id, are refused naming the id.
#[tokio::test]
async fn a_call_sent_again_with_its_request_id_is_made_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let mut server = start(dir.path(), &backend);
    let mut c = client(&server).await;
    let pool = || pb::CreatePoolRequest {
        name: "core".into(),
        prefix: "2001:db8:100::/40".into(),
        tenant_length: 56,
        translation_prefix: String::new(),
    };
    let tenant = || pb::CreateTenantRequest {
        name: "acme".into(),
    };
    let allocate = || pb::AllocatePrefixRequest {
        tenant: "acme".into(),
        pool: "core".into(),
        length: 0,
        prefix: String::new(),
    };
    // Sent twice, answered twice as the first call: no ALREADY_EXISTS.
    for _ in 0..2 {
        c.create_pool(with_id("pool-1", pool())).await.unwrap();
        c.create_tenant(with_id("tenant-1", tenant())).await.unwrap();
    }
    let first = c
        .allocate_prefix(with_id("alloc-1", allocate()))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .allocate_prefix(with_id("alloc-1", allocate()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again, "a retry was answered with another prefix");
    let listed = |c: &mut ControllerClient<Channel>| {
        let mut c = c.clone();
        async move {
            c.list_prefixes(authed(pb::ListPrefixesRequest {
                tenant: "acme".into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .allocations
            .len()
        }
    };
    assert_eq!(listed(&mut c).await, 1);
    // Without an id, a call is made each time.
    c.allocate_prefix(authed(allocate())).await.unwrap();
    assert_eq!(listed(&mut c).await, 2);
    // The same id on another call, and malformed ids: refused, named.
    let other = pb::AllocatePrefixRequest {
        length: 60,
        ..allocate()
    };
    let (code_of, message) = code(c.allocate_prefix(with_id("alloc-1", other)).await).await;
    assert_eq!(code_of, Code::InvalidArgument, "{message}");
    assert!(message.contains("nemo-request-id"), "{message}");
    // ... also when the other call would be made (it reaches the commit).
    let valid_other = pb::AllocatePrefixRequest {
        length: 56,
        ..allocate()
    };
    let (code_of, message) =
        code(c.allocate_prefix(with_id("alloc-1", valid_other)).await).await;
    assert_eq!(code_of, Code::InvalidArgument, "{message}");
    assert!(message.contains("nemo-request-id"), "{message}");
    // Not ASCII at all (a header may carry such octets; an id may not).
    let mut not_ascii = authed(allocate());
    not_ascii.metadata_mut().insert(
        nemo_controller::api::REQUEST_ID,
        tonic::metadata::AsciiMetadataValue::try_from(&b"caf\xc3\xa9"[..]).unwrap(),
    );
    let (code_of, message) = code(c.allocate_prefix(not_ascii).await).await;
    assert_eq!(code_of, Code::InvalidArgument, "{message}");
    assert!(message.contains("nemo-request-id"), "{message}");
    for bad in ["a b", &"x".repeat(65)] {
        let (code_of, message) = code(c.allocate_prefix(with_id(bad, allocate())).await).await;
        assert_eq!(code_of, Code::InvalidArgument, "{message}");
        assert!(message.contains("nemo-request-id"), "{message}");
    }
    assert_eq!(listed(&mut c).await, 2);
    // A release sent again: the first call's answer, not NOT_FOUND.
    let release = || pb::ReleasePrefixRequest {
        prefix: first.prefix.clone(),
    };
    let released = c
        .release_prefix(with_id("release-1", release()))
        .await
        .unwrap()
        .into_inner();
    let released_again = c
        .release_prefix(with_id("release-1", release()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released, released_again);
    // The ids are durable with their changes: after kill -9 and a
    // restart, the retry is still the first call.
    let again_id = c
        .allocate_prefix(with_id("alloc-2", allocate()))
        .await
        .unwrap()
        .into_inner();
    server.kill();
    let server = start(dir.path(), &backend);
    let mut c = client(&server).await;
    let after_restart = c
        .allocate_prefix(with_id("alloc-2", allocate()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again_id, after_restart);
    assert_eq!(listed(&mut c).await, 2, "{}", server.log());
    // The history names the call that made each change.
    let mut events = c
        .watch_events(authed(pb::WatchEventsRequest {
            from_revision: 0,
            history_only: true,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut made_by = Vec::new();
    while let Some(event) = events.message().await.unwrap() {
        made_by.push((event.kind, event.request_id));
    }
    let named = |id: &str| {
        made_by
            .iter()
            .filter(|(_, made)| made == id)
            .map(|(kind, _)| kind.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(named("alloc-2"), ["prefix_allocated"], "{made_by:?}");
    assert_eq!(named("release-1"), ["prefix_released"], "{made_by:?}");
    assert_eq!(named("pool-1"), ["pool_created"], "{made_by:?}");
    // A cascade's releases are steps of the one call: its id is recorded
    // with the tenant's deletion, and the call sent again is told so.
    c.create_tenant(authed(pb::CreateTenantRequest {
        name: "gone".into(),
    }))
    .await
    .unwrap();
    for _ in 0..3 {
        c.allocate_prefix(authed(pb::AllocatePrefixRequest {
            tenant: "gone".into(),
            ..allocate()
        }))
        .await
        .unwrap();
    }
    let delete = || pb::DeleteTenantRequest {
        name: "gone".into(),
        cascade: true,
    };
    let deleted = c
        .delete_tenant(with_id("delete-1", delete()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.released.len(), 3);
    let (code_of, message) = code(c.delete_tenant(with_id("delete-1", delete())).await).await;
    assert_eq!(code_of, Code::AlreadyExists, "{message}");
    assert!(message.contains("made already"), "{message}");
    // nemoctl run again with the --request-id of a first run: one
    // allocation, the same prefix printed.
    let endpoint = format!("http://{}", server.field("grpc"));
    let run = || {
        let output = Command::new(env!("CARGO_BIN_EXE_nemoctl"))
            .args(["--endpoint", &endpoint, "--request-id", "op-7", "--output", "json"])
            .args(["prefix", "allocate", "acme", "--pool", "core"])
            .env("NEMO_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        json[0]["prefix"].as_str().unwrap().to_owned()
    };
    assert_eq!(run(), run());
    assert_eq!(listed(&mut c).await, 3);
}

/// How a watch ends within 5 s: the status code it ends with, `None`
/// when it ends cleanly; panics when it goes on.
async fn ending<T>(stream: &mut tonic::Streaming<T>) -> Option<Code> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    })
    .await
    .expect("the watch went on")
}

/// `message` carrying the bearer token `token`.
fn with_token<T>(token: &str, message: T) -> Request<T> {
    nemo_daemon::authorized(message, token).unwrap()
}

/// Issue 32, item 3: a hypervisor's credential watches its own placements
/// and registers itself, nothing else (not another hypervisor's
/// placements, not a home agent's authorizations with every key, no
/// change); a home agent's reports its own bindings only; a token that is
/// nobody's, or revoked, is refused; credentials outlive a kill -9; the
/// history holds no token.
#[tokio::test]
async fn a_credential_may_do_what_its_role_may_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let mut server = start(dir.path(), &backend);
    let mut c = client(&server).await;
    c.register_home_agent(authed(pb::RegisterHomeAgentRequest {
        home_agent: Some(pb::HomeAgent {
            name: "ha1".into(),
            address: "2001:db8:1::1".into(),
            home_prefix: "2001:db8:1::/64".into(),
            udp_endpoint: String::new(),
        }),
    }))
    .await
    .unwrap();
    let issue = |role: &str, name: &str| pb::IssueCredentialRequest {
        role: role.into(),
        name: name.into(),
    };
    let hv_a = c
        .issue_credential(authed(issue("hypervisor", "hv-a")))
        .await
        .unwrap()
        .into_inner();
    let ha1 = c
        .issue_credential(authed(issue("home_agent", "ha1")))
        .await
        .unwrap()
        .into_inner();
    let (bad_role, message) = code(c.issue_credential(authed(issue("root", ""))).await).await;
    assert_eq!(bad_role, Code::InvalidArgument, "{message}");
    assert!(message.contains("role"), "{message}");
    let placements = |hypervisor: &str| pb::WatchPlacementsRequest {
        hypervisor: hypervisor.into(),
        from_revision: 0,
    };
    let authorizations = |home_agent: &str| pb::WatchAuthorizationsRequest {
        home_agent: home_agent.into(),
        from_revision: 0,
    };
    let report = |home_agent: &str| pb::ReportBindingRequest {
        home_agent: home_agent.into(),
        home_address: "2001:db8:1::100".into(),
        care_of_address: "2001:db8:2::10".into(),
        prefixes: vec![],
        removed: false,
        reason: "registration".into(),
        sequence: 1,
        outer_address: String::new(),
    };
    // The hypervisor's own: allowed.
    c.register_hypervisor(with_token(
        &hv_a.token,
        pb::RegisterHypervisorRequest {
            name: "hv-a".into(),
        },
    ))
    .await
    .unwrap();
    c.watch_placements(with_token(&hv_a.token, placements("hv-a")))
        .await
        .unwrap();
    // Anything else: PERMISSION_DENIED, naming the credential.
    let denied = [
        code(c.watch_placements(with_token(&hv_a.token, placements("hv-b"))).await).await,
        code(
            c.watch_authorizations(with_token(&hv_a.token, authorizations("ha1")))
                .await,
        )
        .await,
        code(
            c.register_hypervisor(with_token(
                &hv_a.token,
                pb::RegisterHypervisorRequest {
                    name: "hv-b".into(),
                },
            ))
            .await,
        )
        .await,
        code(
            c.create_tenant(with_token(
                &hv_a.token,
                pb::CreateTenantRequest {
                    name: "stolen".into(),
                },
            ))
            .await,
        )
        .await,
        code(
            c.list_credentials(with_token(&hv_a.token, pb::ListCredentialsRequest {}))
                .await,
        )
        .await,
        code(c.report_binding(with_token(&ha1.token, report("ha2"))).await).await,
        code(
            c.watch_placements(with_token(&ha1.token, placements("hv-a")))
                .await,
        )
        .await,
    ];
    for (code_of, message) in &denied {
        assert_eq!(*code_of, Code::PermissionDenied, "{message}");
        assert!(message.contains("cred-"), "{message}");
    }
    // The home agent's own: allowed.
    c.report_binding(with_token(&ha1.token, report("ha1")))
        .await
        .unwrap();
    c.watch_authorizations(with_token(&ha1.token, authorizations("ha1")))
        .await
        .unwrap();
    // Nobody's token.
    let (nobody, message) = code(
        c.list_tenants(with_token("a-guessed-token", pb::ListTenantsRequest {}))
            .await,
    )
    .await;
    assert_eq!(nobody, Code::Unauthenticated, "{message}");
    // Listed without tokens; after kill -9, still known.
    let listed = c
        .list_credentials(authed(pb::ListCredentialsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .credentials;
    assert_eq!(listed.len(), 2);
    server.kill();
    let server = start(dir.path(), &backend);
    let mut c = client(&server).await;
    let mut open_watch = c
        .watch_placements(with_token(&hv_a.token, placements("hv-a")))
        .await
        .unwrap()
        .into_inner();
    // Revoked: refused from the next call, and the watch it opened ends.
    let id = hv_a.credential.as_ref().unwrap().id.clone();
    c.revoke_credential(authed(pb::RevokeCredentialRequest { id }))
        .await
        .unwrap();
    assert_eq!(
        ending(&mut open_watch).await,
        Some(Code::Unauthenticated),
        "the revoked credential's watch"
    );
    let (revoked, message) =
        code(c.watch_placements(with_token(&hv_a.token, placements("hv-a"))).await).await;
    assert_eq!(revoked, Code::Unauthenticated, "{message}");
    // An operator credential's event watch ends with its revocation too.
    let operator = c
        .issue_credential(authed(issue("operator", "")))
        .await
        .unwrap()
        .into_inner();
    let mut operator_watch = c
        .watch_events(with_token(
            &operator.token,
            pb::WatchEventsRequest {
                from_revision: 0,
                history_only: false,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let id = operator.credential.as_ref().unwrap().id.clone();
    c.revoke_credential(authed(pb::RevokeCredentialRequest { id }))
        .await
        .unwrap();
    assert_eq!(
        ending(&mut operator_watch).await,
        Some(Code::Unauthenticated),
        "the revoked operator credential's event watch"
    );
    // The history names the credentials, never a token.
    let mut events = c
        .watch_events(authed(pb::WatchEventsRequest {
            from_revision: 0,
            history_only: true,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    while let Some(event) = events.message().await.unwrap() {
        assert!(
            !event.detail_json.contains(&hv_a.token) && !event.detail_json.contains(&ha1.token),
            "{event:?}"
        );
        kinds.push(event.kind);
    }
    assert!(kinds.contains(&"credential_issued".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"credential_revoked".to_owned()), "{kinds:?}");
}

/// A credential for each of `world`'s hypervisors: their tokens by name.
async fn hypervisor_tokens(
    c: &mut ControllerClient<Channel>,
) -> std::collections::BTreeMap<&'static str, String> {
    let mut tokens = std::collections::BTreeMap::new();
    for name in ["hv-a", "hv-b"] {
        let issued = c
            .issue_credential(authed(pb::IssueCredentialRequest {
                role: "hypervisor".into(),
                name: name.into(),
            }))
            .await
            .unwrap()
            .into_inner();
        tokens.insert(name, issued.token);
    }
    tokens
}

/// Issue 29, item 2: with `arrivals = "follow"`, a hypervisor that saw a
/// placed tenant's VM arrive gets it placed there, under its own
/// credential and name only, never as a first placement; with the default,
/// refused naming the setting.
#[tokio::test]
async fn an_arrival_moves_a_placed_tenant_when_the_controller_follows_arrivals() {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let server = start_with(dir.path(), &backend, "arrivals = \"follow\"\n");
    let mut c = client(&server).await;
    world(&mut c).await;
    let tokens = hypervisor_tokens(&mut c).await;
    let arrival = |hypervisor: &str| pb::ReportArrivalRequest {
        hypervisor: hypervisor.into(),
        tenant: "acme".into(),
        evidence: "RARP from 52:54:00:00:01:02 on t-acme".into(),
        kind: pb::ArrivalKind::ArrivalAnnounced.into(),
    };
    // Placed nowhere yet: an arrival is no first placement.
    let (nowhere, message) =
        code(c.report_arrival(with_token(&tokens["hv-b"], arrival("hv-b"))).await).await;
    assert_eq!(nowhere, Code::FailedPrecondition, "{message}");
    assert!(message.contains("placed nowhere"), "{message}");
    c.place_tenant(authed(pb::PlaceTenantRequest {
        tenant: "acme".into(),
        hypervisor: "hv-a".into(),
        reason: "initial".into(),
        delivery: pb::Delivery::Now.into(),
    }))
    .await
    .unwrap();
    // Not on another hypervisor's name.
    let (other, message) =
        code(c.report_arrival(with_token(&tokens["hv-a"], arrival("hv-b"))).await).await;
    assert_eq!(other, Code::PermissionDenied, "{message}");
    // hv-b saw it: placed there, the evidence in the history; again: the same.
    for _ in 0..2 {
        let placed = c
            .report_arrival(with_token(&tokens["hv-b"], arrival("hv-b")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(placed.hypervisor, "hv-b");
        assert!(placed.reason.starts_with("arrival: RARP"), "{placed:?}");
    }
    let listed = c
        .list_placements(authed(pb::ListPlacementsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .placements;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].hypervisor, "hv-b");
    let oversized = pb::ReportArrivalRequest {
        evidence: "x".repeat(201),
        ..arrival("hv-b")
    };
    let (too_long, message) =
        code(c.report_arrival(with_token(&tokens["hv-b"], oversized)).await).await;
    assert_eq!(too_long, Code::InvalidArgument, "{message}");
    assert!(message.contains("evidence"), "{message}");
    let forged = pb::ReportArrivalRequest {
        evidence: "RARP\nforged: line".into(),
        ..arrival("hv-b")
    };
    let (control, message) = code(c.report_arrival(with_token(&tokens["hv-b"], forged)).await).await;
    assert_eq!(control, Code::InvalidArgument, "{message}");
    assert!(message.starts_with("evidence"), "{message}");

    // A controller that does not follow arrivals (the default) refuses,
    // naming the setting, and the tenant stays.
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let server = start(dir.path(), &backend);
    let mut c = client(&server).await;
    world(&mut c).await;
    c.place_tenant(authed(pb::PlaceTenantRequest {
        tenant: "acme".into(),
        hypervisor: "hv-a".into(),
        reason: "initial".into(),
        delivery: pb::Delivery::Now.into(),
    }))
    .await
    .unwrap();
    let (refused, message) = code(c.report_arrival(authed(arrival("hv-b"))).await).await;
    assert_eq!(refused, Code::FailedPrecondition, "{message}");
    assert!(message.contains("arrivals"), "{message}");
}

/// Issue 29, hook-less make-before-break: QEMU attaching the tenant's port
/// on hv-b (ARRIVAL_INCOMING) places it there on its VM's announcement;
/// meanwhile the VM's frames at its source move nothing (the answer is the
/// placement at hv-b, awaiting: again later); hv-b's announcement fulfils the placement, after which frames
/// at hv-a move it back (a migration that failed after the switch); a
/// port that loses its carrier before the announcement (ARRIVAL_ABANDONED)
/// sends the tenant back where it came from, ordered or not.
#[tokio::test]
async fn an_incoming_migration_places_the_tenant_on_its_announcement_and_an_abandoned_one_goes_back(
) {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let server = start_with(dir.path(), &backend, "arrivals = \"follow\"\n");
    let mut c = client(&server).await;
    world(&mut c).await;
    let tokens = hypervisor_tokens(&mut c).await;
    let report = |hypervisor: &'static str, kind: pb::ArrivalKind| {
        with_token(
            &tokens[hypervisor],
            pb::ReportArrivalRequest {
                hypervisor: hypervisor.into(),
                tenant: "acme".into(),
                evidence: format!("{} on t-acme", kind.as_str_name()),
                kind: kind.into(),
            },
        )
    };
    use pb::ArrivalKind::{ArrivalAbandoned, ArrivalAnnounced, ArrivalIncoming};
    let place = |hypervisor: &str, delivery: pb::Delivery| {
        authed(pb::PlaceTenantRequest {
            tenant: "acme".into(),
            hypervisor: hypervisor.into(),
            reason: "orchestrator".into(),
            delivery: delivery.into(),
        })
    };
    // An incoming migration to a tenant placed nowhere is no placement.
    let (nowhere, message) = code(c.report_arrival(report("hv-b", ArrivalIncoming)).await).await;
    assert_eq!(nowhere, Code::FailedPrecondition, "{message}");
    c.place_tenant(place("hv-a", pb::Delivery::Now))
        .await
        .unwrap();

    // QEMU attached hv-b's port: placed there on the announcement.
    for _ in 0..2 {
        let placed = c
            .report_arrival(report("hv-b", ArrivalIncoming))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(placed.hypervisor, "hv-b");
        assert_eq!(placed.delivery(), pb::Delivery::OnAnnouncement, "{placed:?}");
        assert!(placed.reason.starts_with("incoming migration: "), "{placed:?}");
    }
    // The VM still runs at hv-a: its frames there move nothing yet (the
    // answer says where it is going, awaiting what).
    let not_now = c
        .report_arrival(report("hv-a", ArrivalAnnounced))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(not_now.hypervisor, "hv-b", "{not_now:?}");
    assert_eq!(not_now.delivery(), pb::Delivery::OnAnnouncement);
    // Nor does another incoming migration.
    let (twice, message) = code(c.report_arrival(report("hv-a", ArrivalIncoming)).await).await;
    assert_eq!(twice, Code::FailedPrecondition, "{message}");
    // Only the destination can abandon it.
    let (not_there, message) =
        code(c.report_arrival(report("hv-a", ArrivalAbandoned)).await).await;
    assert_eq!(not_there, Code::FailedPrecondition, "{message}");
    // The migration ended before the VM ran at hv-b: back to hv-a at once.
    let back = c
        .report_arrival(report("hv-b", ArrivalAbandoned))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.hypervisor, "hv-a", "{back:?}");
    assert_eq!(back.delivery(), pb::Delivery::Now);
    assert!(back.reason.starts_with("migration abandoned: "), "{back:?}");
    let (again, message) = code(c.report_arrival(report("hv-b", ArrivalAbandoned)).await).await;
    assert_eq!(again, Code::FailedPrecondition, "{message}");

    // Again, and this time the VM announces itself at hv-b: the placement
    // is fulfilled (its traffic passes), and then frames at hv-a (the
    // migration failed after the switch, the VM resumed there) move it back.
    c.report_arrival(report("hv-b", ArrivalIncoming))
        .await
        .unwrap();
    let fulfilled = c
        .report_arrival(report("hv-b", ArrivalAnnounced))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fulfilled.hypervisor, "hv-b");
    assert_eq!(fulfilled.delivery(), pb::Delivery::Now, "{fulfilled:?}");
    let (late, message) = code(c.report_arrival(report("hv-b", ArrivalAbandoned)).await).await;
    assert_eq!(late, Code::FailedPrecondition, "{message}");
    let failed_back = c
        .report_arrival(report("hv-a", ArrivalAnnounced))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed_back.hypervisor, "hv-a");

    // An orchestrator's placement on the announcement is abandoned the same.
    c.place_tenant(place("hv-b", pb::Delivery::OnAnnouncement))
        .await
        .unwrap();
    let back = c
        .report_arrival(report("hv-b", ArrivalAbandoned))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.hypervisor, "hv-a", "{back:?}");

    // An unknown kind is refused, naming the field.
    let bad = with_token(
        &tokens["hv-b"],
        pb::ReportArrivalRequest {
            hypervisor: "hv-b".into(),
            tenant: "acme".into(),
            evidence: "x".into(),
            kind: 9,
        },
    );
    let (invalid, message) = code(c.report_arrival(bad).await).await;
    assert_eq!(invalid, Code::InvalidArgument, "{message}");
    assert!(message.starts_with("kind"), "{message}");
    // Where the last abandoned migration left it.
    let listed = c
        .list_placements(authed(pb::ListPlacementsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .placements;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].hypervisor, "hv-a");
}
include!("ipv4.rs");
